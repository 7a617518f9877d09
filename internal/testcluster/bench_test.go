package testcluster

import "testing"

// The benchmarks measure how long each helper takes to hand a test a ready
// server or cluster (ns/op); stopping is not timed.

func BenchmarkStartVault(b *testing.B) {
	for range b.N {
		v := StartVault(b)
		b.StopTimer()
		stopAll(b, v.Proc)
		b.StartTimer()
	}
}

func BenchmarkStartConsul(b *testing.B) {
	for range b.N {
		c := StartConsul(b, ConsulOptions{Servers: 3, Clients: 1, ACL: true})
		b.StopTimer()
		stopAll(b, append(c.Clients, c.Servers...)...)
		b.StartTimer()
	}
}

func BenchmarkStartNomad(b *testing.B) {
	for range b.N {
		n := StartNomad(b, NomadOptions{Servers: 3, Clients: 1, ACL: true})
		b.StopTimer()
		stopAll(b, append(n.Clients, n.Servers...)...)
		b.StartTimer()
	}
}

func stopAll(b *testing.B, procs ...*Proc) {
	for _, p := range procs {
		if err := p.Stop(); err != nil {
			b.Fatal(err)
		}
	}
}

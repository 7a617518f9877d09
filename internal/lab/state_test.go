package lab

import (
	"strings"
	"testing"
)

// TestNewStatePublic: the public network's names and addresses, without
// root: clients get a public address with the last octet of their private
// one and a host veth name that fits an interface name; servers get none.
func TestNewStatePublic(t *testing.T) {
	cfg := Config{Name: "abcdef", Net: 7, Nodes: Nodes(2, 3), Public: true}
	st := newState(cfg, "/lab", "/rootfs", "/lab/ssh/id_ed25519", nil, nil)
	if st.PublicBridge != "bp-abcdef" || st.PublicHostCIDR != "10.214.7.1/24" ||
		st.OutsideNetns != "lab-abcdef-out" || st.OutsideVeth != "vo-abcdef" || st.OutsideIP != "10.214.7.2" {
		t.Errorf("public network: %+v", st)
	}
	veths := map[string]bool{st.Bridge: true, st.PublicBridge: true, st.OutsideVeth: true}
	for _, m := range st.Machines {
		client := strings.HasPrefix(m.Name, "client-")
		switch {
		case !client && (m.PublicIP != "" || m.PublicVeth != ""):
			t.Errorf("%s is a server and has a public address %q (veth %q)", m.Name, m.PublicIP, m.PublicVeth)
		case client && m.PublicIP != "10.214.7."+strings.TrimPrefix(m.IP, "10.213.7."):
			t.Errorf("%s: public address %q for private %q", m.Name, m.PublicIP, m.IP)
		case client && (len(m.PublicVeth) > 15 || veths[m.PublicVeth]):
			t.Errorf("%s: public veth %q is too long or not unique", m.Name, m.PublicVeth)
		}
		veths[m.PublicVeth] = true
	}
	if m := st.Machines[4]; m.PublicVeth != "vpabcdef-4" {
		t.Errorf("client-3's public veth is %q", m.PublicVeth)
	}

	inv := st.Inventory()
	for i, n := range inv.Nodes {
		m := st.Machines[i]
		api := m.IP
		if m.PublicIP != "" {
			api = m.PublicIP // bootstrap reaches a client on its public address
		}
		if n.PublicIP != m.PublicIP || n.PrivateIP != m.IP || n.APIAddress() != api {
			t.Errorf("inventory node %s: public %q, private %q, API %q", n.Name, n.PublicIP, n.PrivateIP, n.APIAddress())
		}
	}

	want := "[Match]\nName=pub0\n\n[Network]\nAddress=10.214.7.12/24\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n"
	if got := publicNetwork(st.Machines[2], st.PublicHostCIDR); got != want {
		t.Errorf("client-1's pub0.network:\n%s\nwant:\n%s", got, want)
	}
	if got := publicNetwork(st.Machines[0], st.PublicHostCIDR); got != "" {
		t.Errorf("server-1 gets a pub0.network:\n%s", got)
	}
}

// TestNewStatePrivate: without Config.Public nothing public is laid out.
func TestNewStatePrivate(t *testing.T) {
	st := newState(Config{Name: "lab", Net: 0, Nodes: Nodes(1, 2)}, "/lab", "/rootfs", "/key", nil, nil)
	if st.PublicBridge != "" || st.PublicHostCIDR != "" || st.OutsideNetns != "" || st.OutsideVeth != "" || st.OutsideIP != "" {
		t.Errorf("public network without Config.Public: %+v", st)
	}
	for _, m := range st.Machines {
		if m.PublicIP != "" || m.PublicVeth != "" {
			t.Errorf("%s: public address %q (veth %q) without Config.Public", m.Name, m.PublicIP, m.PublicVeth)
		}
	}
	for _, n := range st.Inventory().Nodes {
		if n.PublicIP != "" {
			t.Errorf("inventory node %s has public_ip %q", n.Name, n.PublicIP)
		}
	}
}

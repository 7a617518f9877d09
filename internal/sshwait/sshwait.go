// Package sshwait waits until freshly provisioned machines answer SSH:
// a TCP connection, an SSH handshake whose host key is checked, and a login
// with the platform's key. Host keys are trusted on first use and recorded
// in a known_hosts file; a host key that later changes is an error, never a
// retry.
package sshwait

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/platform-bootstrap/bootstrap/internal/fsutil"
	"github.com/platform-bootstrap/bootstrap/internal/inventory"
)

// Options configure Wait.
type Options struct {
	// KnownHosts is the known_hosts file host keys are recorded in and
	// checked against (normally <state-dir>/ssh/known_hosts). Required.
	KnownHosts string
	// Signer logs in to nodes whose inventory entry names no
	// private_key_file (normally the keys stage's key).
	Signer ssh.Signer
	// Timeout bounds the whole wait (default 5 minutes).
	Timeout time.Duration
	// Interval is the pause between attempts on one node (default 2s).
	Interval time.Duration
	// DialTimeout bounds one connection attempt (default 10s).
	DialTimeout time.Duration
	// Log receives one line per node when it answers, and per failed
	// attempt. May be nil.
	Log io.Writer
}

// Address is where a node's SSH server is reached: the address bootstrap
// reaches the node on (public when it has one) and its SSH port.
func Address(n inventory.Node) string {
	port := n.SSH.Port
	if port == 0 {
		port = 22
	}
	return net.JoinHostPort(n.APIAddress(), strconv.Itoa(port))
}

// Wait returns when every node has answered SSH, or an error naming each
// node that did not within the timeout.
func Wait(ctx context.Context, nodes []inventory.Node, opts Options) error {
	if opts.KnownHosts == "" {
		return errors.New("sshwait: no known_hosts file given")
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 5 * time.Minute
	}
	if opts.Interval <= 0 {
		opts.Interval = 2 * time.Second
	}
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = 10 * time.Second
	}
	if opts.Log == nil {
		opts.Log = io.Discard
	}
	kh := &knownHosts{path: opts.KnownHosts}
	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()

	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	var logMu sync.Mutex
	logf := func(format string, args ...any) {
		logMu.Lock()
		defer logMu.Unlock()
		fmt.Fprintf(opts.Log, format+"\n", args...)
	}
	for i, n := range nodes {
		signer := opts.Signer
		if n.SSH.PrivateKeyFile != "" {
			s, err := loadKey(n.SSH.PrivateKeyFile)
			if err != nil {
				return fmt.Errorf("sshwait: node %s: %w", n.Name, err)
			}
			signer = s
		}
		if signer == nil {
			return fmt.Errorf("sshwait: node %s: no SSH key: the inventory names no private_key_file and none was given", n.Name)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = waitNode(ctx, n, signer, kh, opts, logf)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

func loadKey(path string) (ssh.Signer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read SSH key: %w", err)
	}
	s, err := ssh.ParsePrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("SSH key %s: %w", path, err)
	}
	return s, nil
}

// ChangedHostKeyError is returned when a node presents a host key other than
// the one recorded for its address.
type ChangedHostKeyError struct {
	Node, Address, KnownHosts string
	Got                       ssh.PublicKey
}

func (e *ChangedHostKeyError) Error() string {
	return fmt.Sprintf("node %s (%s): the SSH host key changed (now %s %s); refusing to connect, this may be a man-in-the-middle. "+
		"If the machine was re-created, delete its line from %s and run again",
		e.Node, e.Address, e.Got.Type(), ssh.FingerprintSHA256(e.Got), e.KnownHosts)
}

func waitNode(ctx context.Context, n inventory.Node, signer ssh.Signer, kh *knownHosts, opts Options, logf func(string, ...any)) error {
	addr := Address(n)
	start := time.Now()
	var last error
	for attempt := 1; ; attempt++ {
		err := try(ctx, n, addr, signer, kh, opts)
		if err == nil {
			logf("ssh: %s (%s) answered after %d attempt(s)", n.Name, addr, attempt)
			return nil
		}
		var changed *ChangedHostKeyError
		if errors.As(err, &changed) {
			return err
		}
		// A refused key says more than a timeout of the attempt the
		// deadline cut short: keep it for the error.
		if last == nil || !isAuthError(last) || isAuthError(err) {
			last = err
		}
		logf("ssh: %s (%s): attempt %d: %v", n.Name, addr, attempt, err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("node %s (%s) did not answer SSH as %s within %s (%d attempts); last error: %w",
				n.Name, addr, n.SSH.User, time.Since(start).Round(time.Second), attempt, last)
		case <-time.After(opts.Interval):
		}
	}
}

func isAuthError(err error) bool {
	return strings.Contains(err.Error(), "unable to authenticate")
}

// try makes one connection: TCP, handshake with the host key checked
// against known_hosts (recorded on first use), and public key login.
func try(ctx context.Context, n inventory.Node, addr string, signer ssh.Signer, kh *knownHosts, opts Options) error {
	algos, err := kh.algorithms(addr)
	if err != nil {
		return err
	}
	var changed error
	cfg := &ssh.ClientConfig{
		User:              n.SSH.User,
		Auth:              []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyAlgorithms: algos,
		HostKeyCallback: func(hostname string, remote net.Addr, key ssh.PublicKey) error {
			err := kh.check(n.Name, addr, key)
			var c *ChangedHostKeyError
			if errors.As(err, &c) {
				changed = c
			}
			return err
		},
		Timeout: opts.DialTimeout,
	}
	dctx, cancel := context.WithTimeout(ctx, opts.DialTimeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(dctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	// The handshake has no context; a deadline bounds it instead.
	deadline, _ := dctx.Deadline()
	conn.SetDeadline(deadline)
	c, chans, reqs, err := ssh.NewClientConn(conn, addr, cfg)
	if changed != nil {
		return changed
	}
	if err != nil {
		return err
	}
	client := ssh.NewClient(c, chans, reqs)
	return client.Close()
}

// knownHosts is a known_hosts file shared by the goroutines of one Wait.
type knownHosts struct {
	path string
	mu   sync.Mutex
}

func (k *knownHosts) load() (ssh.HostKeyCallback, error) {
	if _, err := os.Stat(k.path); errors.Is(err, os.ErrNotExist) {
		return func(string, net.Addr, ssh.PublicKey) error { return &knownhosts.KeyError{} }, nil
	}
	cb, err := knownhosts.New(k.path)
	if err != nil {
		return nil, fmt.Errorf("known_hosts %s: %w", k.path, err)
	}
	return cb, nil
}

// known returns the keys recorded for addr.
func (k *knownHosts) known(addr string) ([]knownhosts.KnownKey, error) {
	cb, err := k.load()
	if err != nil {
		return nil, err
	}
	err = cb(addr, fakeAddr(addr), probeKey{})
	var ke *knownhosts.KeyError
	if errors.As(err, &ke) {
		return ke.Want, nil
	}
	return nil, err
}

// algorithms limits the handshake to the types of the host keys already
// recorded for addr, so a server that also has, say, an RSA key is not
// mistaken for one whose ed25519 key changed.
func (k *knownHosts) algorithms(addr string) ([]string, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	keys, err := k.known(addr)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, key := range keys {
		switch t := key.Key.Type(); t {
		case ssh.KeyAlgoRSA:
			out = append(out, ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA)
		default:
			out = append(out, t)
		}
	}
	return out, nil
}

// check accepts a recorded key, records the key of an address seen for the
// first time, and refuses a key that differs from the recorded one.
func (k *knownHosts) check(node, addr string, key ssh.PublicKey) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	cb, err := k.load()
	if err != nil {
		return err
	}
	err = cb(addr, fakeAddr(addr), key)
	var ke *knownhosts.KeyError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &ke) && len(ke.Want) > 0:
		return &ChangedHostKeyError{Node: node, Address: addr, KnownHosts: k.path, Got: key}
	case errors.As(err, &ke):
		return k.record(addr, key)
	default:
		return err
	}
}

func (k *knownHosts) record(addr string, key ssh.PublicKey) error {
	old, err := os.ReadFile(k.path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("known_hosts: %w", err)
	}
	if len(old) > 0 && old[len(old)-1] != '\n' {
		old = append(old, '\n')
	}
	line := knownhosts.Line([]string{knownhosts.Normalize(addr)}, key) + "\n"
	if err := os.MkdirAll(filepath.Dir(k.path), 0o700); err != nil {
		return fmt.Errorf("known_hosts: %w", err)
	}
	if err := fsutil.WriteFile(k.path, append(old, line...), 0o600); err != nil {
		return fmt.Errorf("known_hosts: %w", err)
	}
	return nil
}

// fakeAddr satisfies knownhosts' need for the remote address, which it only
// uses when the host name is not an address.
type fakeAddr string

func (a fakeAddr) Network() string { return "tcp" }
func (a fakeAddr) String() string  { return string(a) }

// probeKey matches no recorded key, so the known_hosts callback lists every
// key recorded for an address.
type probeKey struct{}

func (probeKey) Type() string                               { return "bootstrap-probe" }
func (probeKey) Marshal() []byte                            { return []byte("bootstrap-probe") }
func (probeKey) Verify(data []byte, s *ssh.Signature) error { return errors.New("probe key") }

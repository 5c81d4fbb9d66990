//go:build unix

package mosquittotest

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"testing"
	"time"
)

func TestTLSListeners(t *testing.T) {
	files, pool := NewTestCA(t)
	cfg := testConfig()
	cfg.TLS = files
	b := Start(t, cfg)

	if b.TLSAddr() != "tls://"+b.TLSHostPort() || b.WSSAddr() == "" {
		t.Fatalf("TLSAddr() = %q, TLSHostPort() = %q, WSSAddr() = %q", b.TLSAddr(), b.TLSHostPort(), b.WSSAddr())
	}
	// MQTT over TLS, verified against the test CA.
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", b.TLSHostPort(), &tls.Config{RootCAs: pool})
	if err != nil {
		t.Fatalf("TLS handshake with %s: %v", b.TLSAddr(), err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if ca := mqttConnect(t, c, "pub", "secret"); ca.reason != 0 {
		t.Errorf("CONNACK reason 0x%02x over TLS, want 0", ca.reason)
	}

	// The secure WebSocket listener presents the same certificate.
	wss := b.WSSAddr()
	host := wss[len("wss://") : len(wss)-len("/mqtt")]
	c2, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", host, &tls.Config{RootCAs: pool})
	if err != nil {
		t.Fatalf("TLS handshake with %s: %v", wss, err)
	}
	c2.Close()

	// Without the CA the certificate does not verify.
	_, err = tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", b.TLSHostPort(), &tls.Config{})
	var unknown x509.UnknownAuthorityError
	if !errors.As(err, &unknown) {
		t.Errorf("TLS handshake without the CA: %v, want x509.UnknownAuthorityError", err)
	}

	// A restart keeps the TLS listeners on their ports.
	port := b.TLSHostPort()
	b.Restart(t)
	if b.TLSHostPort() != port {
		t.Errorf("TLS listener moved from %s to %s", port, b.TLSHostPort())
	}
	c3, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", port, &tls.Config{RootCAs: pool})
	if err != nil {
		t.Fatalf("TLS handshake after Restart: %v", err)
	}
	c3.Close()
}

func TestNoTLSAddrs(t *testing.T) {
	b := startTest(t)
	if b.TLSAddr() != "" || b.WSSAddr() != "" || b.TLSHostPort() != "" {
		t.Errorf("TLS addresses %q %q %q without Config.TLS", b.TLSAddr(), b.WSSAddr(), b.TLSHostPort())
	}
}

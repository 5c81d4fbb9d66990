//go:build unix

package mosquittotest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// testCA writes a fresh CA and a server certificate for 127.0.0.1 signed by it into
// t.TempDir() and returns the files and a pool trusting the CA.
func testCA(t *testing.T) (*TLSFiles, *x509.CertPool) {
	t.Helper()
	dir := t.TempDir()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "mosquittotest CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	files := &TLSFiles{
		CAFile:   filepath.Join(dir, "ca.pem"),
		CertFile: filepath.Join(dir, "server.pem"),
		KeyFile:  filepath.Join(dir, "server.key"),
	}
	for path, block := range map[string]*pem.Block{
		files.CAFile:   {Type: "CERTIFICATE", Bytes: caDER},
		files.CertFile: {Type: "CERTIFICATE", Bytes: leafDER},
		files.KeyFile:  {Type: "PRIVATE KEY", Bytes: keyDER},
	} {
		if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return files, pool
}

func TestTLSListeners(t *testing.T) {
	files, pool := testCA(t)
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

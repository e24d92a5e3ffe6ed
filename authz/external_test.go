package authz

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// TestExternalPDPOverTCP connects to a Cerbos PDP that tollgate does not
// manage, as a team that already runs one would: over TCP in plaintext, and
// over TLS with the server's CA. A wrong CA fails closed.
func TestExternalPDPOverTCP(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	certFile, keyFile := selfSignedCert(t, dir)
	for _, tc := range []struct {
		name string
		tls  bool
	}{{"plaintext", false}, {"tls", true}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			addr := startExternalPDP(t, tc.tls, certFile, keyFile)
			opts := []Option{WithPlaintext()}
			if tc.tls {
				opts = []Option{WithTLS(certFile)}
			}
			ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
			defer cancel()
			c, err := NewClient(ctx, addr, append(opts, WithTimeout(hangGuard))...)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			eventually(t, hangGuard, "the external PDP to answer", func() (bool, string) {
				err := c.Ready(ctx)
				return err == nil, fmt.Sprint(err)
			})
			r := Resource{Kind: "domain", ID: "cheap.xyz", Attr: map[string]any{"tld": "xyz", "sld": "cheap"}}
			got := c.Check(ctx, webAgent(), r, "check", "register")
			if !got["check"].Allowed || got["register"].Allowed || got["register"].Unavailable {
				t.Fatalf("decisions %v", got)
			}
			if tc.tls {
				// A client that trusts another CA cannot talk to it: denied, unavailable.
				other, _ := selfSignedCert(t, t.TempDir())
				bad, err := NewClient(ctx, addr, WithTLS(other), WithTimeout(time.Second))
				if err != nil {
					t.Fatal(err)
				}
				defer bad.Close()
				if d := bad.Check(ctx, webAgent(), r, "check")["check"]; d.Allowed || !d.Unavailable {
					t.Fatalf("a client with the wrong CA got %v", d)
				}
			}
		})
	}
}

// startExternalPDP runs the real cerbos binary on a loopback TCP port with
// this repository's policies, the way an operator would run it.
func startExternalPDP(t *testing.T, withTLS bool, certFile, keyFile string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	dir := t.TempDir()
	tlsBlock := ""
	if withTLS {
		tlsBlock = fmt.Sprintf("  tls:\n    cert: %s\n    key: %s\n", certFile, keyFile)
	}
	conf := fmt.Sprintf(`server:
  grpcListenAddr: "%s"
  httpListenAddr: "unix:%s"
%sstorage:
  driver: disk
  disk:
    directory: %s
schema:
  enforcement: reject
engine:
  strictEvaluation: true
audit:
  enabled: false
telemetry:
  disabled: true
`, addr, filepath.Join(dir, "http.sock"), tlsBlock, repoPolicies(t))
	cfgFile := filepath.Join(dir, "cerbos.yaml")
	if err := os.WriteFile(cfgFile, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(cerbosBin(t), "server", "--config="+cfgFile, "--log-level=error")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return addr
}

// selfSignedCert writes a certificate (its own CA) for 127.0.0.1 and its key.
func selfSignedCert(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "cerbos.test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:                  true,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

package sandbox

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"
)

// serveTest serves s on a real loopback listener for the test's lifetime.
func serveTest(t *testing.T, s *Sandbox) (string, *http.Client) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	addr, err := Serve(ctx, "127.0.0.1:0", s)
	if err != nil {
		t.Fatalf("Serve: %v", err)
	}
	return "http://" + addr, &http.Client{}
}

func get(ctx context.Context, c *http.Client, url, token string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	resp.Body.Close()
	return resp, nil
}

func TestServe(t *testing.T) {
	t.Parallel()
	s, _ := newTestSandbox(t, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	addr, err := Serve(ctx, "127.0.0.1:0", s)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(addr, "127.0.0.1:") || strings.HasSuffix(addr, ":0") {
		t.Fatalf("bound address %q", addr)
	}
	if got := APIBase(addr); got != "http://"+addr+"/client/v4/" {
		t.Fatalf("APIBase = %q", got)
	}
	resp, err := get(context.Background(), http.DefaultClient, APIBase(addr)+acctPath("tokens/verify"), s.ParentToken())
	if err != nil || resp.StatusCode != 200 || resp.Header.Get("cf-ray") == "" {
		t.Fatalf("verify over loopback: %v %v", resp, err)
	}
	cancel()
	deadline := time.Now().Add(2 * time.Minute) // a hang guard only
	for {
		_, err := get(context.Background(), &http.Client{Timeout: time.Second}, APIBase(addr)+acctPath("tokens/verify"), s.ParentToken())
		if err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("server still answering after its context ended")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestServeRefusesNonLoopback(t *testing.T) {
	t.Parallel()
	s, _ := newTestSandbox(t, Options{})
	for _, addr := range []string{"0.0.0.0:0", "192.0.2.1:8788", "example.com:80", "nonsense"} {
		if _, err := Serve(context.Background(), addr, s); err == nil {
			t.Errorf("Serve(%q) accepted", addr)
		}
	}
}

package sandbox

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestFaultRates(t *testing.T) {
	t.Parallel()
	check := acctPath("registrar/domain-check")
	body := []byte(`{"domains":["faults.com"]}`)
	tests := []struct {
		name   string
		faults Faults
		path   string
		status int
		code   int
	}{
		{"error rate 1", Faults{ErrorRate: 1}, check, 500, codeUnknownError},
		{"rate limit 1", Faults{RateLimitRate: 1}, check, 429, codeRateLimited},
		{"other path unaffected", Faults{ErrorRate: 1, PathContains: "/workers/"}, check, 200, 0},
		{"matching path", Faults{ErrorRate: 1, PathContains: "/domain-check"}, check, 500, codeUnknownError},
		{"faults precede auth", Faults{RateLimitRate: 1}, check, 429, codeRateLimited},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, _ := newTestSandbox(t, Options{})
			tok, _ := mint(t, s, []string{pgRegistrarRead})
			s.SetFaults(tc.faults)
			r := call(t, s, "POST", tc.path, tok, body, "")
			if r.Status != tc.status || r.code() != tc.code || r.Header.Get("cf-ray") == "" {
				t.Fatalf("got %d code %d: %s", r.Status, r.code(), r.Raw)
			}
			if tc.status == 429 && r.Header.Get("Retry-After") == "" {
				t.Error("429 without Retry-After")
			}
		})
	}
}

func TestFaultsDeterministicPerSeed(t *testing.T) {
	t.Parallel()
	run := func(seed int64) string {
		s, _ := newTestSandbox(t, Options{Seed: seed, Faults: Faults{ErrorRate: 0.3, RateLimitRate: 0.2, PathContains: "verify"}})
		var out strings.Builder
		for i := 0; i < 40; i++ {
			r := call(t, s, "GET", acctPath("tokens/verify"), s.ParentToken(), nil, "")
			fmt.Fprintf(&out, "%d %s;", r.Status, r.Header.Get("cf-ray"))
		}
		return out.String()
	}
	a, b, c := run(1), run(1), run(2)
	if a != b {
		t.Fatal("same seed, different faults")
	}
	if a == c {
		t.Fatal("different seeds, same faults")
	}
	for _, want := range []string{"200 ", "500 ", "429 "} {
		if !strings.Contains(a, want) {
			t.Errorf("40 requests at 30%%/20%% produced no %s", want)
		}
	}
}

func TestFaultOptionsRejected(t *testing.T) {
	t.Parallel()
	for _, f := range []Faults{{ErrorRate: -0.1}, {RateLimitRate: 2}, {ErrorRate: 0.6, RateLimitRate: 0.6}, {Latency: -time.Second}} {
		if _, err := New(Options{Faults: f}); err == nil {
			t.Errorf("New accepted %+v", f)
		}
	}
	s, _ := newTestSandbox(t, Options{})
	defer func() {
		if recover() == nil {
			t.Error("SetFaults accepted an error rate of 5")
		}
	}()
	s.SetFaults(Faults{ErrorRate: 5})
}

func TestFaultLatencyAndHang(t *testing.T) {
	t.Parallel()
	s, _ := newTestSandbox(t, Options{})
	srvURL, client := serveTest(t, s)

	s.SetFaults(Faults{Latency: 30 * time.Millisecond})
	start := time.Now()
	resp, err := get(context.Background(), client, srvURL+APIPrefix+acctPath("tokens/verify"), s.ParentToken())
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("verify with latency: %v %v", resp, err)
	}
	if d := time.Since(start); d < 30*time.Millisecond {
		t.Fatalf("latency fault not applied: answered in %v", d)
	}

	s.SetFaults(Faults{Hang: true})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err = get(ctx, client, srvURL+APIPrefix+acctPath("tokens/verify"), s.ParentToken())
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("hang: %v, want the client's deadline", err)
	}

	// Close releases held requests with a 503.
	done := make(chan int, 1)
	go func() {
		resp, err := get(context.Background(), client, srvURL+APIPrefix+acctPath("tokens/verify"), s.ParentToken())
		if err != nil {
			done <- -1
			return
		}
		done <- resp.StatusCode
	}()
	waitFor(t, func() bool { return hanging(s) })
	s.Close()
	if code := <-done; code != http.StatusServiceUnavailable {
		t.Fatalf("released hang answered %d, want 503", code)
	}
}

// hanging is true once a request reached the handler; used to close only
// after the third request is held.
func hanging(s *Sandbox) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rays >= 3
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute) // a hang guard only
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestFailAfterEffect(t *testing.T) {
	t.Parallel()
	s, _ := newTestSandbox(t, Options{})
	admin, _ := mint(t, s, []string{pgRegistrarAdmin})
	s.SetFaults(Faults{ErrorRate: 1, FailAfterEffect: true, PathContains: "/registrations"})
	r := call(t, s, "POST", acctPath("registrar/registrations"), admin, []byte(`{"domain_name":"acted.com"}`), "")
	if r.Status != 500 {
		t.Fatalf("status %d", r.Status)
	}
	if !hasDomain(s.Registrations(), "acted.com") {
		t.Fatal("FailAfterEffect did not let the registration happen")
	}
}

func TestOnRequestAndLog(t *testing.T) {
	t.Parallel()
	s, _ := newTestSandbox(t, Options{})
	tok, id := mint(t, s, []string{pgRegistrarRead})
	var seen atomic.Int32
	release := make(chan struct{})
	s.OnRequest(func(r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/domain-check") {
			seen.Add(1)
			<-release
		}
	})
	done := make(chan reply, 1)
	go func() {
		done <- call(t, s, "POST", acctPath("registrar/domain-check"), tok, []byte(`{"domains":["hook.com"]}`), "")
	}()
	waitFor(t, func() bool { return seen.Load() == 1 })
	select {
	case <-done:
		t.Fatal("request finished while the hook held it")
	default:
	}
	close(release)
	r := <-done
	s.OnRequest(nil)
	if r.Status != 200 {
		t.Fatalf("status %d", r.Status)
	}
	log := s.Requests()
	last := log[len(log)-1]
	if last.Method != "POST" || !strings.HasSuffix(last.Path, "/registrar/domain-check") || last.Status != 200 || last.TokenID != id || last.CFRay != r.Header.Get("cf-ray") || last.At.IsZero() {
		t.Fatalf("log entry %+v", last)
	}
	call(t, s, "GET", acctPath("tokens/verify"), "", nil, "")
	if last := s.Requests()[len(s.Requests())-1]; last.TokenID != "" || last.Status != 400 {
		t.Fatalf("unauthenticated entry %+v", last)
	}
}

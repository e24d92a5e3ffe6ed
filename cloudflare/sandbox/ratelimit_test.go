package sandbox

import (
	"net/http"
	"strconv"
	"testing"
	"time"
)

func TestRateLimitEmulation(t *testing.T) {
	t.Parallel()
	check := acctPath("registrar/domain-check")
	body := []byte(`{"domains":["limits.com"]}`)
	s, clk := newTestSandbox(t, Options{RateLimit: RateLimit{Requests: 5, Window: time.Minute, Lockout: 2 * time.Minute}})
	tok, _ := mint(t, s, []string{pgRegistrarRead}) // the mint is request 1
	other, _ := mint(t, s, []string{pgRegistrarRead})
	for i := 3; i <= 5; i++ {
		r := call(t, s, "POST", check, tok, body, "")
		if r.Status != http.StatusOK {
			t.Fatalf("request %d: %d %s", i, r.Status, r.Raw)
		}
		if got, want := r.Header.Get("Ratelimit"), `"default";r=`+strconv.Itoa(5-i)+`;t=60`; got != want {
			t.Errorf("request %d: Ratelimit %q, want %q", i, got, want)
		}
		if got := r.Header.Get("Ratelimit-Policy"); got != `"default";q=5;w=60` {
			t.Errorf("Ratelimit-Policy %q", got)
		}
	}
	if s.Lockouts() != 0 {
		t.Fatal("locked out within the limit")
	}
	// The sixth request exceeds the limit: 429 for it and, for the whole
	// lockout, for every token of the account.
	r := call(t, s, "POST", check, tok, body, "")
	if r.Status != http.StatusTooManyRequests || r.code() != codeRateLimited || r.Header.Get("Retry-After") != "120" {
		t.Fatalf("over the limit: %d %q %s", r.Status, r.Header.Get("Retry-After"), r.Raw)
	}
	clk.advance(90 * time.Second) // the window moved on, the lockout did not
	if r := call(t, s, "POST", check, other, body, ""); r.Status != http.StatusTooManyRequests || r.Header.Get("Retry-After") != "30" {
		t.Fatalf("another token during the lockout: %d %q", r.Status, r.Header.Get("Retry-After"))
	}
	if r := call(t, s, "GET", acctPath("tokens"), s.ParentToken(), nil, ""); r.Status != http.StatusTooManyRequests {
		t.Fatalf("the parent token during the lockout: %d", r.Status)
	}
	clk.advance(31 * time.Second)
	if r := call(t, s, "POST", check, other, body, ""); r.Status != http.StatusOK || r.Header.Get("Ratelimit") != `"default";r=4;t=60` {
		t.Fatalf("after the lockout: %d %q", r.Status, r.Header.Get("Ratelimit"))
	}
	if s.Lockouts() != 1 {
		t.Errorf("Lockouts = %d, want 1", s.Lockouts())
	}
	// Unauthenticated requests are neither counted nor limited.
	if r := call(t, s, "POST", check, "", body, ""); r.Header.Get("Ratelimit") != "" {
		t.Errorf("an unauthenticated answer carries %q", r.Header.Get("Ratelimit"))
	}
}

func TestRateLimitDefaultsAndOff(t *testing.T) {
	t.Parallel()
	s, _ := newTestSandbox(t, Options{})
	tok, _ := mint(t, s, []string{pgRegistrarRead})
	r := call(t, s, "POST", acctPath("registrar/domain-check"), tok, []byte(`{"domains":["a.com"]}`), "")
	if r.Header.Get("Ratelimit-Policy") != `"default";q=1200;w=300` || r.Header.Get("Ratelimit") != `"default";r=1198;t=300` {
		t.Errorf("default headers: %q %q", r.Header.Get("Ratelimit-Policy"), r.Header.Get("Ratelimit"))
	}
	s.SetRateLimit(RateLimit{Off: true})
	r = call(t, s, "POST", acctPath("registrar/domain-check"), tok, []byte(`{"domains":["a.com"]}`), "")
	if r.Status != http.StatusOK || r.Header.Get("Ratelimit") != "" {
		t.Errorf("off: %d %q", r.Status, r.Header.Get("Ratelimit"))
	}
	if _, err := New(Options{RateLimit: RateLimit{Requests: -1}}); err == nil {
		t.Error("a negative limit was accepted")
	}
}

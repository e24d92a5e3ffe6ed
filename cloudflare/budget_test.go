package cloudflare

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tollgatehq/tollgate/cloudflare/sandbox"
)

func TestParseRateItems(t *testing.T) {
	t.Parallel()
	tests := []struct {
		h      string
		a, b   int
		wantOK bool
	}{
		{`"default";r=50;t=30`, 50, 30, true},
		{`"default";r=50;t=30, "burst";r=9;t=2`, 9, 2, true},
		{`"burst";t=2;r=9`, 9, 2, true},
		{`"default";r=50`, 0, 0, false},
		{`"default";r=-1;t=3`, 0, 0, false},
		{`garbage`, 0, 0, false},
		{``, 0, 0, false},
	}
	for _, tt := range tests {
		a, b, ok := parseRateItems(tt.h, "r", "t")
		if ok != tt.wantOK || a != tt.a || b != tt.b {
			t.Errorf("parseRateItems(%q) = %d, %d, %v; want %d, %d, %v", tt.h, a, b, ok, tt.a, tt.b, tt.wantOK)
		}
	}
}

func TestRateBudget(t *testing.T) {
	t.Parallel()
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	rb := newRateBudget(10, time.Minute, 0.2, clock, slog.New(slog.DiscardHandler))

	// 8 price checks fit: 2 (the headroom) stay for essential requests.
	for i := range 8 {
		if err := rb.admit(classDeferrable, "quote"); err != nil {
			t.Fatalf("price check %d: %v", i+1, err)
		}
		now = now.Add(time.Second)
	}
	err := rb.admit(classDeferrable, "quote")
	var le *LimitError
	if !errors.As(err, &le) || le.Limit != "rate" || le.RetryAfter != 52*time.Second || !strings.Contains(err.Error(), "retry after 52s") {
		t.Fatalf("9th price check: %v (%+v), want refused until the first request leaves the window (52s)", err, le)
	}
	for i := range 2 {
		if err := rb.admit(classEssential, "exec"); err != nil {
			t.Fatalf("essential request %d in the headroom: %v", i+1, err)
		}
	}
	if err := rb.admit(classEssential, "exec"); !errors.As(err, &le) {
		t.Fatalf("an essential request past the limit: %v, want refused", err)
	}
	used, limit, _, perToken, refused := rb.usage()
	if used != 10 || limit != 10 || perToken["quote"] != 8 || perToken["exec"] != 2 || refused != 2 {
		t.Fatalf("usage: used %d/%d, per token %v, refused %d", used, limit, perToken, refused)
	}
	// The window moves on.
	now = now.Add(time.Minute)
	if err := rb.admit(classDeferrable, "quote"); err != nil {
		t.Fatalf("after the window moved: %v", err)
	}

	// Cloudflare's headers win when they say less is left.
	rb = newRateBudget(1200, 5*time.Minute, 0.2, clock, slog.New(slog.DiscardHandler))
	res := &http.Response{StatusCode: 200, Header: http.Header{}}
	res.Header.Set("Ratelimit-Policy", `"default";q=100;w=60`)
	res.Header.Set("Ratelimit", `"default";r=21;t=40`)
	rb.observe(res)
	if err := rb.admit(classDeferrable, "quote"); err != nil {
		t.Fatalf("21 left, headroom 20: %v", err)
	}
	if err := rb.admit(classDeferrable, "quote"); !errors.As(err, &le) || le.RetryAfter != 40*time.Second {
		t.Fatalf("20 left by the header: %v, want refused until the header's reset (40s)", err)
	}
	if _, limit, window, _, _ := rb.usage(); limit != 100 || window != time.Minute {
		t.Fatalf("Ratelimit-Policy not applied: %d per %v", limit, window)
	}

	// A 429 with Retry-After pauses price checks, not essential requests.
	rb = newRateBudget(1200, 5*time.Minute, 0.2, clock, slog.New(slog.DiscardHandler))
	res = &http.Response{StatusCode: http.StatusTooManyRequests, Header: http.Header{}}
	res.Header.Set("Retry-After", "300")
	rb.observe(res)
	if err := rb.admit(classDeferrable, "quote"); !errors.As(err, &le) || le.RetryAfter != 300*time.Second {
		t.Fatalf("price check after a 429: %v, want refused for 300s", err)
	}
	if err := rb.admit(classEssential, "exec"); err != nil {
		t.Fatalf("essential request after a 429: %v", err)
	}
}

// TestQuotesStopBeforeCloudflareLocksTheAccount drives price checks into a
// small sandbox limit that tollgate learns only from the headers: the
// checks are refused with a retry-after, a registration and every token
// revocation still go through, and the sandbox never locks the account.
func TestQuotesStopBeforeCloudflareLocksTheAccount(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.sb.SetRateLimit(sandbox.RateLimit{Requests: 40, Window: time.Hour, Lockout: time.Hour})
	ctx := context.Background()
	ss, err := e.b.Shared(PurposeQuote, SharedHooks{})
	if err != nil {
		t.Fatal(err)
	}
	var refusal error
	for i := range 100 {
		if err := quote(ctx, ss, fmt.Sprintf("limit-%03d.com", i)); err != nil {
			refusal = err
			break
		}
	}
	var le *LimitError
	if !errors.As(refusal, &le) || le.RetryAfter <= 0 || !strings.Contains(refusal.Error(), "retry after") {
		t.Fatalf("price checks were never refused with a retry-after: %v", refusal)
	}
	// An execution: its own token, the domain-check re-check, the
	// registration and the revocation — all inside the headroom.
	s, err := e.b.Session(ctx, PurposeRegister, "op_exec")
	if err != nil {
		t.Fatalf("mint for an execution: %v", err)
	}
	if _, err := s.CheckDomains(ctx, "limit-buy.com"); err != nil {
		t.Fatalf("price re-check of an execution: %v", err)
	}
	if _, err := s.Register(ctx, RegisterParams{Domain: "limit-buy.com"}); err != nil {
		t.Fatalf("registration: %v", err)
	}
	if err := s.Close(ctx); err != nil {
		t.Fatalf("revocation: %v", err)
	}
	ss.Close(ctx)
	if e.b.Alive() != 0 {
		t.Errorf("%d tokens left alive", e.b.Alive())
	}
	if n := e.sb.Lockouts(); n != 0 {
		t.Fatalf("the sandbox locked the account %d times", n)
	}
	for _, r := range e.sb.Requests() {
		if r.Status == http.StatusTooManyRequests {
			t.Fatalf("Cloudflare answered 429 to %s %s", r.Method, r.Path)
		}
	}
	if u := e.b.Usage(); u.RateLimit != 40 || u.Refused == 0 || u.Requests > 40 {
		t.Errorf("usage %+v: want the sandbox's limit learned, refusals counted, at most 40 requests", u)
	}
}

func TestTokenCap(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *Config) { c.TokenCap = 15 })
	ctx := context.Background()
	if u := e.b.Usage(); u.AccountTokens != -1 {
		t.Fatalf("token count before any Sweep: %d, want -1 (unknown)", u.AccountTokens)
	}
	if _, err := e.b.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if u := e.b.Usage(); u.AccountTokens != 1 || u.TokenCap != 15 {
		t.Fatalf("after Sweep: %d of %d tokens, want the parent token alone of 15", u.AccountTokens, u.TokenCap)
	}
	var sessions []*Session
	for i := range 4 {
		s, err := e.b.Session(ctx, PurposeInspect, fmt.Sprintf("cap-%d", i))
		if err != nil {
			t.Fatalf("mint %d: %v", i, err)
		}
		sessions = append(sessions, s)
	}
	_, err := e.b.Session(ctx, PurposeInspect, "one-too-many")
	var le *LimitError
	if !errors.As(err, &le) || le.Limit != "tokens" || !strings.Contains(err.Error(), "5 of its 15 API tokens") {
		t.Fatalf("mint at the cap margin: %v, want refused naming the count and the cap", err)
	}
	if err := sessions[0].Close(ctx); err != nil {
		t.Fatal(err)
	}
	s, err := e.b.Session(ctx, PurposeInspect, "room-again")
	if err != nil {
		t.Fatalf("mint after a revocation made room: %v", err)
	}
	sessions = append(sessions, s)
	for _, s := range sessions[1:] {
		_ = s.Close(ctx)
	}
}

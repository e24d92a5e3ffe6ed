package cloudflare

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgatehq/tollgate/cloudflare/sandbox"
)

func TestSessionMintsLeastPrivilegeToken(t *testing.T) {
	t.Parallel()
	tests := []struct {
		purpose Purpose
		groups  string
	}{
		{PurposeQuote, "[Registrar Domains Read]"},
		{PurposeRegister, "[Registrar Domains Admin Registrar Domains Read]"},
		{PurposeDeploy, "[Workers Scripts Read Workers Scripts Write]"},
		{PurposeInspect, "[Registrar Domains Read Workers Scripts Read Zone Read]"},
	}
	for _, tc := range tests {
		t.Run(string(tc.purpose), func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, func(c *Config) { c.TokenTTL = 3 * time.Minute })
			before := time.Now()
			s, err := e.b.Session(context.Background(), tc.purpose, "op-123")
			if err != nil {
				t.Fatal(err)
			}
			after := time.Now()
			if e.b.Alive() != 1 {
				t.Fatalf("Alive = %d", e.b.Alive())
			}
			var rec *sandbox.TokenRecord
			for _, tr := range e.sb.LiveTokens() {
				if tr.ID == s.TokenID {
					rec = &tr
				}
			}
			if rec == nil {
				t.Fatal("minted token not in the sandbox")
			}
			if !regexp.MustCompile(`^tollgate:` + string(tc.purpose) + `:op-123:[0-9a-f]{16}$`).MatchString(rec.Name) {
				t.Errorf("token name %q", rec.Name)
			}
			if got := fmt.Sprint(rec.PermissionGroups); got != tc.groups {
				t.Errorf("permission groups %s, want %s", got, tc.groups)
			}
			if got := fmt.Sprint(rec.Resources); got != "[com.cloudflare.api.account."+e.sb.AccountID()+"]" {
				t.Errorf("resources %s", got)
			}
			// The TTL counts from the mint, somewhere between before and
			// after (however long a busy machine took); Cloudflare keeps
			// whole seconds.
			if lo, hi := before.Add(3*time.Minute).Truncate(time.Second), after.Add(3*time.Minute); rec.ExpiresOn.Before(lo) || rec.ExpiresOn.After(hi) || !rec.ExpiresOn.Equal(s.ExpiresAt) {
				t.Errorf("expires_on %v (session %v), want the TTL of 3m from the mint: between %v and %v", rec.ExpiresOn, s.ExpiresAt, lo, hi)
			}
			if len(rec.RequestIPIn) != 0 {
				t.Errorf("request_ip set without RequestIP: %v", rec.RequestIPIn)
			}
			if err := s.Close(context.Background()); err != nil {
				t.Fatal(err)
			}
			if e.liveToken(s.TokenID) || e.b.Alive() != 0 {
				t.Fatalf("token outlived Close: live=%v alive=%d", e.liveToken(s.TokenID), e.b.Alive())
			}
			if err := s.Close(context.Background()); err != nil {
				t.Fatalf("second Close: %v", err)
			}
		})
	}
}

func TestSessionRefusesBadInput(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	before := len(e.sb.Requests())
	for _, tc := range []struct {
		p     Purpose
		label string
		want  string
	}{
		{"admin", "x", `purpose "admin" is not one of`},
		{PurposeQuote, "", "label"},
		{PurposeQuote, "a:b", "label"},
		{PurposeQuote, strings.Repeat("x", 65), "label"},
		{PurposeQuote, "spaces are bad", "label"},
	} {
		if _, err := e.b.Session(context.Background(), tc.p, tc.label); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Session(%q, %q) = %v, want an error about %s", tc.p, tc.label, err, tc.want)
		}
	}
	if n := len(e.sb.Requests()); n != before {
		t.Fatalf("bad input made %d requests", n-before)
	}
}

func TestPermissionGroupsAreCached(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for i := 0; i < 3; i++ {
		e.session(t, PurposeRegister, "cache")
	}
	lists := 0
	for _, r := range e.sb.Requests() {
		if strings.HasSuffix(r.Path, "/tokens/permission_groups") {
			lists++
		}
	}
	if lists != 1 {
		t.Fatalf("permission groups listed %d times for 3 sessions", lists)
	}
}

func TestRequestIPCondition(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	here := newEnv(t, func(c *Config) { c.RequestIP = "127.0.0.1" })
	s := here.session(t, PurposeQuote, "ip")
	for _, tr := range here.sb.LiveTokens() {
		if tr.ID == s.TokenID && fmt.Sprint(tr.RequestIPIn) != "[127.0.0.1/32]" {
			t.Fatalf("request_ip.in = %v", tr.RequestIPIn)
		}
	}
	if _, err := s.CheckDomains(ctx, "ip-ok.com"); err != nil {
		t.Fatalf("token bound to 127.0.0.1 refused from 127.0.0.1: %v", err)
	}
	elsewhere := newEnv(t, func(c *Config) { c.RequestIP = "192.0.2.0/24" })
	s = elsewhere.session(t, PurposeQuote, "ip")
	_, err := s.CheckDomains(ctx, "ip-no.com")
	var ae *APIError
	if !errors.As(err, &ae) || ae.Status != http.StatusForbidden || ae.Code != 9109 {
		t.Fatalf("token bound to 192.0.2.0/24 used from 127.0.0.1: %v", err)
	}
}

func TestAliveTracksConcurrentSessions(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const n = 12
	sessions := make([]*Session, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := e.b.Session(context.Background(), PurposeQuote, fmt.Sprintf("c%d", i))
			if err != nil {
				errs <- err
				return
			}
			sessions[i] = s
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if e.b.Alive() != n || len(e.sb.LiveTokens()) != n+1 {
		t.Fatalf("Alive %d, sandbox live %d", e.b.Alive(), len(e.sb.LiveTokens()))
	}
	for _, s := range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.Close(context.Background()); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if e.b.Alive() != 0 || len(e.sb.LiveTokens()) != 1 {
		t.Fatalf("after Close: Alive %d, sandbox live %d (want the parent only)", e.b.Alive(), len(e.sb.LiveTokens()))
	}
}

func TestSweepDeletesLeftovers(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	// A crashed process's broker: its sessions are never closed.
	crashed, err := NewBroker(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 7 {
		if _, err := crashed.Session(ctx, PurposeDeploy, fmt.Sprintf("crashed-%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	mine := e.session(t, PurposeQuote, "still-running")
	n, err := e.b.Sweep(ctx)
	if err != nil || n != 7 {
		t.Fatalf("Sweep = %d, %v; want 7 deleted", n, err)
	}
	live := e.sb.LiveTokens()
	if len(live) != 2 || !e.liveToken(mine.TokenID) {
		t.Fatalf("after Sweep: %+v", live)
	}
	if n, err := e.b.Sweep(ctx); err != nil || n != 0 {
		t.Fatalf("second Sweep = %d, %v", n, err)
	}
	// Sweep pages: more tokens than one page of 50.
	for i := range 60 {
		if _, err := crashed.Session(ctx, PurposeQuote, fmt.Sprintf("many-%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := e.b.Sweep(ctx); err != nil || n != 60 {
		t.Fatalf("Sweep over pages = %d, %v", n, err)
	}
}

// TestSweepDeadSparesLiveProcesses: several tollgate processes mint on one
// account; a sweep deletes only the tokens of owners that are gone (and
// ownerless leftovers), never a live process's.
func TestSweepDeadSparesLiveProcesses(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	owned := func(owner string) *Broker {
		b, err := NewBroker(e.cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := b.SetOwner(owner); err != nil {
			t.Fatal(err)
		}
		return b
	}
	alive, dead := owned("ls_alive"), owned("ls_dead")
	var aliveIDs []string
	for i := range 3 {
		s, err := alive.Session(ctx, PurposeDeploy, fmt.Sprintf("op-%d", i))
		if err != nil {
			t.Fatal(err)
		}
		for _, tr := range e.sb.LiveTokens() {
			if tr.ID == s.TokenID && TokenOwner(tr.Name) != "ls_alive" {
				t.Fatalf("token name %q does not carry its owner", tr.Name)
			}
		}
		aliveIDs = append(aliveIDs, s.TokenID)
		if _, err := dead.Session(ctx, PurposeRegister, fmt.Sprintf("op-%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := NewBrokerMust(t, e.cfg).Session(ctx, PurposeQuote, "ownerless"); err != nil {
		t.Fatal(err)
	}
	if err := e.b.SetOwner("bad:owner"); err == nil {
		t.Fatal("an owner with ':' accepted")
	}
	n, err := e.b.SweepDead(ctx, func(owner string) bool { return owner == "ls_alive" })
	if err != nil || n != 4 {
		t.Fatalf("SweepDead = %d, %v; want the dead owner's 3 and the ownerless 1", n, err)
	}
	for _, id := range aliveIDs {
		if !e.liveToken(id) {
			t.Fatalf("a live process's token %s was deleted", id)
		}
	}
	if got := len(e.sb.LiveTokens()); got != 4 {
		t.Fatalf("%d tokens left, want the parent and the live process's 3", got)
	}
	for name, want := range map[string]TokenName{
		"tollgate:ls_a:deploy:op_x:0011": {Owner: "ls_a", Purpose: "deploy", Label: "op_x"},
		"tollgate:deploy:op_x:0011":      {Purpose: "deploy", Label: "op_x"},
		"other:ls_a:deploy:op:1":         {},
		"tollgate:a:b:c:d:e":             {},
	} {
		if got, ok := ParseTokenName(name); got != want || ok != (want != TokenName{}) {
			t.Errorf("ParseTokenName(%q) = %+v, %v; want %+v", name, got, ok, want)
		}
	}
}

func TestCloseRetriesAndSurvivesCancelledContext(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	s := e.session(t, PurposeQuote, "close")
	e.sb.SetFaults(sandbox.Faults{ErrorRate: 1, PathContains: "/tokens/" + s.TokenID})
	err := s.Close(context.Background())
	if err == nil || !strings.Contains(err.Error(), s.TokenID) {
		t.Fatalf("Close against a failing API = %v", err)
	}
	deletes := 0
	for _, r := range e.sb.Requests() {
		if r.Method == "DELETE" {
			deletes++
		}
	}
	if deletes != e.b.cfg.DeleteAttempts {
		t.Fatalf("%d delete attempts, want %d", deletes, e.b.cfg.DeleteAttempts)
	}
	if e.b.Alive() != 1 || !e.liveToken(s.TokenID) {
		t.Fatal("a failed Close forgot the token")
	}
	if !strings.Contains(e.logs.String(), `"msg":"could not delete minted cloudflare token`) {
		t.Fatal("failed delete not logged")
	}
	if _, err := s.CheckDomains(context.Background(), "x.com"); !errors.Is(err, ErrSessionClosed) {
		t.Fatalf("call after a failed Close: %v", err)
	}
	e.sb.SetFaults(sandbox.Faults{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Close(ctx); err != nil {
		t.Fatalf("Close with a cancelled context: %v", err)
	}
	if e.b.Alive() != 0 || e.liveToken(s.TokenID) {
		t.Fatal("token still alive")
	}
}

func TestCloseWhenTokenAlreadyGone(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	s := e.session(t, PurposeQuote, "gone")
	if n, err := NewBrokerMust(t, e.cfg).Sweep(context.Background()); err != nil || n != 1 {
		t.Fatalf("Sweep from another broker: %d %v", n, err)
	}
	if err := s.Close(context.Background()); err != nil {
		t.Fatalf("Close of an already deleted token: %v", err)
	}
	if e.b.Alive() != 0 {
		t.Fatal("Alive still counts it")
	}
}

func NewBrokerMust(t *testing.T, c Config) *Broker {
	t.Helper()
	b, err := NewBroker(c)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestAmbiguousCreateIsCleanedUp(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	// The create succeeds at Cloudflare but answers 500; the broker must
	// find the half-created token by name and delete it.
	e.sb.SetFaults(sandbox.Faults{ErrorRate: 1, FailAfterEffect: true, PathContains: "/tokens"})
	e.sb.OnRequest(func(r *http.Request) {
		// The cleanup's list of tokens: stop failing from here on.
		if r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/tokens") {
			e.sb.SetFaults(sandbox.Faults{})
		}
	})
	_, err := e.b.Session(context.Background(), PurposeDeploy, "ambiguous")
	var ae *APIError
	if !errors.As(err, &ae) || ae.Status != 500 {
		t.Fatalf("Session = %v, want the 500", err)
	}
	if live := e.sb.LiveTokens(); len(live) != 1 {
		t.Fatalf("half-created token left behind: %+v", live)
	}
	if e.b.Alive() != 0 {
		t.Fatal("Alive counts a token that was never handed out")
	}
}

func TestCreateRetriesOnlyRateLimits(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.session(t, PurposeQuote, "warm") // caches permission groups
	count := func() int {
		n := 0
		for _, r := range e.sb.Requests() {
			if r.Method == "POST" && strings.HasSuffix(r.Path, "/tokens") {
				n++
			}
		}
		return n
	}
	start := count()
	// Register tokens are for executions: a price check's token would stop
	// at the first 429 instead (the rate budget defers price checks).
	e.sb.SetFaults(sandbox.Faults{RateLimitRate: 1, PathContains: "/tokens"})
	if _, err := e.b.Session(context.Background(), PurposeRegister, "limited"); err == nil {
		t.Fatal("Session succeeded against a permanent 429")
	}
	if got := count() - start; got != 1+e.b.cfg.ReadRetries {
		t.Fatalf("429: %d create attempts, want %d", got, 1+e.b.cfg.ReadRetries)
	}
	start = count()
	e.sb.SetFaults(sandbox.Faults{ErrorRate: 1, PathContains: "/tokens"})
	if _, err := e.b.Session(context.Background(), PurposeRegister, "broken"); err == nil {
		t.Fatal("Session succeeded against a permanent 500")
	}
	if got := count() - start; got != 1 {
		t.Fatalf("500: %d create attempts, want exactly 1 (a POST is never blindly retried)", got)
	}
}

func TestPing(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	if err := e.b.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
	bad := e.cfg
	bad.ParentToken = strings.Repeat("z", 40)
	err := NewBrokerMust(t, bad).Ping(context.Background())
	var ae *APIError
	if !errors.As(err, &ae) || ae.Status != http.StatusUnauthorized || ae.Code != 1000 {
		t.Fatalf("Ping with an unknown token = %v", err)
	}
	if strings.Contains(err.Error(), bad.ParentToken) {
		t.Fatal("error names the token")
	}
}

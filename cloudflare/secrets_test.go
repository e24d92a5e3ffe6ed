package cloudflare

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tollgatehq/tollgate/cloudflare/sandbox"
)

// TestSecretsNeverLeak drives every path, failures included, then scans the
// logs, every error (plain, %+v and %#v) and every RequestRecord for the
// parent token and every minted token's value.
func TestSecretsNeverLeak(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *Config) { c.RequestIP = "127.0.0.1" })
	ctx := context.Background()
	secrets := []string{e.sb.ParentToken()}
	var errs []error
	note := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	open := func(p Purpose, label string) *Session {
		s, err := e.b.Session(ctx, p, label)
		if err != nil {
			t.Fatal(err)
		}
		secrets = append(secrets, s.token)
		return s
	}

	note(e.b.Ping(ctx))
	reg := open(PurposeRegister, "leak-reg")
	_, err := reg.CheckDomains(ctx, "leak.com", "google.com", "a..com")
	note(err)
	_, err = reg.Register(ctx, RegisterParams{Domain: "slow-leak.com", Years: 2})
	note(err)
	_, err = reg.Register(ctx, RegisterParams{Domain: "slow-leak.com"}) // 409
	note(err)
	_, err = reg.Register(ctx, RegisterParams{Domain: "fail-leak.com"})
	note(err)
	_, err = reg.Register(ctx, RegisterParams{Domain: "action-leak.com"})
	note(err)
	_, err = reg.GetRegistration(ctx, "missing-leak.com")
	note(err)
	_, err = reg.DeployWorker(ctx, DeployParams{ScriptName: "x", Module: []byte("x"), CompatibilityDate: "2025-01-01"})
	note(err)

	dep := open(PurposeDeploy, "leak-dep")
	_, err = dep.DeployWorker(ctx, DeployParams{ScriptName: "leak", Module: []byte(workerSrc), CompatibilityDate: "2025-01-01", WorkersDev: true})
	note(err)
	_, err = dep.GetWorker(ctx, "leak")
	note(err)
	_, err = dep.GetWorker(ctx, "no-leak")
	note(err)
	// Direct refusals: 403 from the registrar, 401 after expiry.
	note(domainCheck(ctx, e, dep.token))

	e.sb.SetFaults(sandbox.Faults{ErrorRate: 1, PathContains: "/domain-check"})
	_, err = reg.CheckDomains(ctx, "fault.com")
	note(err)
	e.sb.SetFaults(sandbox.Faults{ErrorRate: 1, FailAfterEffect: true, PathContains: "/registrar/registrations"})
	_, err = reg.Register(ctx, RegisterParams{Domain: "doubt-leak.com"})
	note(err)
	e.sb.SetFaults(sandbox.Faults{Hang: true, PathContains: "/workers/scripts/"})
	_, err = dep.DeployWorker(ctxTimeout(t, 50*time.Millisecond), DeployParams{ScriptName: "hang", Module: []byte(workerSrc), CompatibilityDate: "2025-01-01"})
	note(err)
	e.sb.SetFaults(sandbox.Faults{ErrorRate: 1, PathContains: "/tokens/" + dep.TokenID})
	note(dep.Close(ctx))
	e.sb.SetFaults(sandbox.Faults{})

	e.failObs.Store(true)
	_, err = reg.CheckDomains(ctx, "audit.com")
	note(err)
	_, err = e.b.Session(ctx, PurposeQuote, "audit-down")
	note(err)
	e.failObs.Store(false)

	e.offset.Store(int64(time.Hour))
	_, err = reg.CheckDomains(ctx, "late.com")
	note(err)
	note(domainCheck(ctx, e, reg.token))
	e.offset.Store(0)

	note(reg.Close(ctx))
	note(dep.Close(ctx))
	_, err = reg.CheckDomains(ctx, "closed.com")
	note(err)

	bad := e.cfg
	bad.ParentToken = strings.Repeat("Q", 40)
	secrets = append(secrets, bad.ParentToken)
	other, err := NewBroker(bad)
	if err != nil {
		t.Fatal(err)
	}
	note(other.Ping(ctx))
	_, err = other.Session(ctx, PurposeQuote, "bad-parent")
	note(err)
	_, err = other.Sweep(ctx)
	note(err)
	bad.AccountID = "nope"
	_, err = NewBroker(bad)
	note(err)

	if len(errs) < 20 {
		t.Fatalf("only %d errors exercised", len(errs))
	}
	var haystack strings.Builder
	haystack.WriteString(e.logs.String())
	for _, err := range errs {
		fmt.Fprintf(&haystack, "\n%v\n%+v\n%#v\n", err, err, err)
	}
	for _, r := range e.recorded() {
		fmt.Fprintf(&haystack, "\n%+v\n%#v\n", r, r)
	}
	fmt.Fprintf(&haystack, "\n%+v\n%#v\n%v\n", e.cfg, e.cfg, e.b.cfg)
	all := haystack.String()
	if !strings.Contains(all, "Authentication error") || !strings.Contains(all, "revoked cloudflare token") {
		t.Fatal("the scan did not see the failures it was meant to cover")
	}
	for i, s := range secrets {
		if s == "" {
			t.Fatalf("secret %d is empty", i)
		}
		if strings.Contains(all, s) {
			t.Errorf("secret %d leaked", i)
		}
	}
}

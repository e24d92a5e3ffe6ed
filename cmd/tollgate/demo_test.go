//go:build linux

package main

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestDemoRunsEndToEnd keeps the showcase honest: `tollgate demo` must walk
// through every step against the real parts and end with an intact chain.
func TestDemoRunsEndToEnd(t *testing.T) {
	t.Parallel()
	bin := tollgateBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cerbos, err := filepath.Abs(filepath.Join("..", "..", ".tools", "bin", "cerbos"))
	if err != nil {
		t.Fatal(err)
	}
	// Run from a folder that is not the checkout, as a user of the binary
	// would: the demo must fall back to the policies built into it.
	cmd := exec.CommandContext(ctx, bin, "demo", "--dir", t.TempDir())
	cmd.Dir = t.TempDir()
	cmd.Env = append(cmd.Environ(), "TOLLGATE_CERBOS_BIN="+cerbos, "TOLLGATE_POLICIES=")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("tollgate demo: %v\n%s", err, out)
	}
	for _, want := range []string{
		"registrable=true",                                    // check_domain
		"extension .xyz is not on the allowlist",              // a policy deny
		"waiting for a human approver",                        // the call pauses
		"approved by bob",                                     // the local approver
		"status=succeeded  resource=domain:tollgate-demo.dev", // the registration
		"same call as operation",                              // idempotency
		"web-hello-preview.tollgate-sandbox.workers.dev",      // preview deploy
		"resource=worker_script:web-hello  quote=5.00 USD",    // the monthly commitment
		"as a gradual rollout: 10% → 50% → 100%, every 5s",    // one approval for the rollout
		"Rolled out web-hello: all traffic on version",        // the rollout's last step, in audit show
		"(step 2 of 3)",                                       // a middle step, in audit show
		"tollgate-demo.dev will start serving Worker web-hello (production); it is served now by nothing",
		"status=succeeded  resource=worker_domain:tollgate-demo.dev",     // the apex attached
		"status=succeeded  resource=worker_domain:www.tollgate-demo.dev", // www attached, then detached
		"www.tollgate-demo.dev → Worker web-hello",                       // list_domains
		"purpose=attach", // the attach's own token, in audit show
		`"serving":"`,    // rollback_worker put all traffic back on version 1
		"www.tollgate-demo.dev will stop serving Worker web-hello", // the detach's approval
		"budget_exceeded",                         // the budget rail
		"agents may register for at most 5 years", // the policy rail
		"audit chain intact",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("demo output lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("demo output:\n%s", out)
	}
}

package server

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/tollgatehq/tollgate/cloudflare"
	"github.com/tollgatehq/tollgate/cloudflare/sandbox"
	"github.com/tollgatehq/tollgate/ledger"
	"github.com/tollgatehq/tollgate/tools"
)

// TestParentRotationAudited: a rotation of the parent token by a serving
// tollgate lands in the audit trail as the system's, never with the value,
// and the server keeps minting with the new value.
func TestParentRotationAudited(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "cloudflare-token")
	e := newEnv(t, withCloudflare(func(c *cloudflare.Config, sb *sandbox.Sandbox) {
		if err := os.WriteFile(file, []byte(sb.ParentToken()), 0o600); err != nil {
			t.Fatal(err)
		}
		c.ParentToken, c.ParentSource = "", cloudflare.TokenFile(file)
	}))
	ctx := context.Background()
	old := e.sb.ParentToken()
	rec, err := e.srv.broker.Rotate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rolled := e.sb.ParentToken()
	if b, _ := os.ReadFile(file); strings.TrimSpace(string(b)) != rolled || rolled == old {
		t.Fatal("the token file does not hold the rolled value")
	}
	var seen int
	if err := e.db.Events(ctx, ledger.EventQuery{}, func(ev ledger.Event) error {
		if strings.Contains(string(ev.Data), old) || strings.Contains(string(ev.Data), rolled) {
			t.Errorf("event %s holds a parent token value", ev.Type)
		}
		if ev.Type == EventParentRotated {
			seen++
			if ev.Actor != "system" || !strings.Contains(string(ev.Data), rec.TokenID) || !strings.Contains(string(ev.Data), file) {
				t.Errorf("rotation event %s %s", ev.Actor, ev.Data)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if seen != 1 {
		t.Fatalf("%d rotation events, want 1", seen)
	}
	// A price check mints with the new value.
	if res := e.call("web-bot", "check_domain", map[string]any{"domain": "after-rotation.com"}); res.IsError {
		t.Fatalf("check_domain after the rotation: %+v", res.Content)
	}
}

// TestRotationRacesExecutions: the parent token is rolled over and over
// while agents' calls execute (each minting, using and revoking its own
// token): every execution succeeds, every rotation is audited, no minted
// token survives and the token file ends with the account's live value.
func TestRotationRacesExecutions(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "cloudflare-token")
	e := newEnv(t, withCloudflare(func(c *cloudflare.Config, sb *sandbox.Sandbox) {
		if err := os.WriteFile(file, []byte(sb.ParentToken()), 0o600); err != nil {
			t.Fatal(err)
		}
		c.ParentToken, c.ParentSource = "", cloudflare.TokenFile(file)
	}))
	ctx := context.Background()
	const calls, rotations = 8, 4
	var wg sync.WaitGroup
	results := make(chan string, calls)
	for i := range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res := e.call(webBot, "deploy_worker", map[string]any{
				"script_name": fmt.Sprintf("web-rot-%d", i), "module": okModule, "environment": "preview", "reason": reason,
			})
			if res.IsError {
				results <- text(res)
				return
			}
			var v tools.OperationView
			b, _ := json.Marshal(res.StructuredContent)
			if err := json.Unmarshal(b, &v); err != nil {
				results <- err.Error()
				return
			}
			results <- v.Status
		}()
	}
	rotErr := make(chan error, 1)
	go func() {
		for range rotations {
			if _, err := e.srv.broker.Rotate(ctx); err != nil {
				rotErr <- err
				return
			}
		}
		rotErr <- nil
	}()
	wg.Wait()
	close(results)
	if err := <-rotErr; err != nil {
		t.Fatalf("rotation: %v", err)
	}
	for r := range results {
		if r != "succeeded" {
			t.Errorf("an execution racing the rotations ended %s", r)
		}
	}
	if b, _ := os.ReadFile(file); strings.TrimSpace(string(b)) != e.sb.ParentToken() {
		t.Fatal("the token file does not hold the account's live parent value")
	}
	rotated := 0
	_ = e.db.Events(ctx, ledger.EventQuery{}, func(ev ledger.Event) error {
		if ev.Type == EventParentRotated {
			rotated++
		}
		return nil
	})
	if rotated != rotations {
		t.Fatalf("%d rotations audited, want %d", rotated, rotations)
	}
	for _, tok := range operationTokens(e) {
		if !strings.Contains(tok.Name, ":inspect:") {
			t.Errorf("token %s survived", tok.Name)
		}
	}
}

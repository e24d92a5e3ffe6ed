package server

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tollgatehq/tollgate/cloudflare"
	"github.com/tollgatehq/tollgate/cloudflare/sandbox"
	"github.com/tollgatehq/tollgate/ledger"
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

package ledger

import (
	"context"
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"
)

var tokenShape = regexp.MustCompile(`^tg_[A-Za-z0-9_-]{43}$`)

func TestAgentTokens(t *testing.T) { t.Parallel(); eachBackend(t, testAgentTokens) }

func testAgentTokens(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	clk := newClock(nov22)
	db := openTest(t, WithClock(clk.Now))
	a := Agent{Name: "web-bot", Team: "web", Owner: "alice", Roles: []string{"agent", "deployer"}, Attributes: map[string]string{"trust": "high"}}

	tok1, err := db.CreateAgent(ctx, a, 24*time.Hour, "cli:alice")
	if err != nil {
		t.Fatal(err)
	}
	if !tokenShape.MatchString(tok1) {
		t.Fatalf("token shape %q", tok1)
	}
	got, err := db.Authenticate(ctx, tok1)
	if err != nil || got.Name != "web-bot" || got.Team != "web" || got.Owner != "alice" || len(got.Roles) != 2 || got.Attributes["trust"] != "high" {
		t.Fatalf("authenticate: %+v %v", got, err)
	}
	if _, err := db.CreateAgent(ctx, a, time.Hour, "cli:alice"); !errors.Is(err, ErrExists) {
		t.Fatalf("create twice: %v", err)
	}

	// Rotate with a 10 minute overlap: both tokens work inside it.
	clk.Advance(time.Hour)
	tok2, err := db.RotateAgentToken(ctx, "web-bot", 24*time.Hour, 10*time.Minute, "cli:alice")
	if err != nil || tok2 == tok1 {
		t.Fatalf("rotate: %v", err)
	}
	clk.Advance(9 * time.Minute)
	for _, tok := range []string{tok1, tok2} {
		if _, err := db.Authenticate(ctx, tok); err != nil {
			t.Fatalf("within overlap: %v", err)
		}
	}
	// After the overlap the old one is expired, the new one works.
	clk.Advance(2 * time.Minute)
	if _, err := db.Authenticate(ctx, tok1); !errors.Is(err, ErrTokenExpired) || !strings.Contains(err.Error(), "rotated") {
		t.Fatalf("old after overlap: %v", err)
	}
	if _, err := db.Authenticate(ctx, tok2); err != nil {
		t.Fatalf("new after overlap: %v", err)
	}
	// A second rotation never extends an old token's overlap, nor past its expiry.
	tok3, err := db.RotateAgentToken(ctx, "web-bot", 2*time.Hour, 48*time.Hour, "cli:alice")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Authenticate(ctx, tok1); !errors.Is(err, ErrTokenExpired) {
		t.Fatalf("tok1 revived: %v", err)
	}
	clk.Advance(24 * time.Hour) // tok2 expires (24h ttl) although the overlap was 48h; tok3 (2h) too
	if _, err := db.Authenticate(ctx, tok2); !errors.Is(err, ErrTokenExpired) {
		t.Fatalf("tok2 beyond its expiry: %v", err)
	}
	if _, err := db.Authenticate(ctx, tok3); !errors.Is(err, ErrTokenExpired) {
		t.Fatalf("tok3 after ttl: %v", err)
	}
	tok4, err := db.RotateAgentToken(ctx, "web-bot", time.Hour, 0, "cli:alice")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Authenticate(ctx, tok4); err != nil {
		t.Fatal(err)
	}

	// Revoke: every token, at once.
	if err := db.RevokeAgent(ctx, "web-bot", "cli:alice"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Authenticate(ctx, tok4); !errors.Is(err, ErrTokenRevoked) {
		t.Fatalf("after revoke: %v", err)
	}
	if err := db.RevokeAgent(ctx, "ghost", "cli:alice"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("revoke unknown: %v", err)
	}
	if _, err := db.RotateAgentToken(ctx, "ghost", time.Hour, 0, "x"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("rotate unknown: %v", err)
	}

	// Malformed and unknown.
	for _, bad := range []string{"", "tg_", "Bearer " + tok1, tok1 + "x", tok1[:len(tok1)-1], "xx" + tok1[2:], strings.Replace(tok1, tok1[5:6], "!", 1), strings.ToUpper(tok1)} {
		if _, err := db.Authenticate(ctx, bad); !errors.Is(err, ErrTokenMalformed) && !errors.Is(err, ErrTokenUnknown) {
			t.Errorf("Authenticate(%.10q…) = %v", bad, err)
		}
	}
	if _, err := db.Authenticate(ctx, "tg_short"); !errors.Is(err, ErrTokenMalformed) {
		t.Fatalf("malformed: %v", err)
	}
	if _, err := db.Authenticate(ctx, newToken()); !errors.Is(err, ErrTokenUnknown) {
		t.Fatalf("unknown: %v", err)
	}

	// Listing shows tokens by prefix and state, never the secret; the audit trail
	// never holds a token either.
	infos, err := db.Agents(ctx)
	if err != nil || len(infos) != 1 || len(infos[0].Tokens) != 4 {
		t.Fatalf("Agents: %+v %v", infos, err)
	}
	for _, tk := range infos[0].Tokens {
		if tk.RevokedAt == nil && tk.ExpiresAt.After(clk.Now()) {
			t.Errorf("token %s not revoked", tk.ID)
		}
		if len(tk.Prefix) != 11 || !strings.HasPrefix(tk.Prefix, "tg_") {
			t.Errorf("prefix %q", tk.Prefix)
		}
	}
	if infos[0].Tokens[0].Prefix != tok4[:11] || infos[0].Tokens[3].OverlapUntil == nil {
		t.Fatalf("token order or overlap: %+v", infos[0].Tokens)
	}
	for _, tok := range []string{tok1, tok2, tok3, tok4} {
		if n := countRows(t, db, `SELECT COUNT(*) FROM audit_events WHERE data LIKE '%' || ? || '%' OR data LIKE '%' || ? || '%'`, tok, tok[3:]); n != 0 {
			t.Fatalf("token found in %d audit rows", n)
		}
		if n := countRows(t, db, `SELECT COUNT(*) FROM agent_tokens WHERE CAST(hash AS TEXT) LIKE '%' || ? || '%'`, tok); n != 0 {
			t.Fatal("token stored")
		}
	}
	if n := countRows(t, db, `SELECT COUNT(*) FROM audit_events WHERE type IN ('agent.created', 'agent.token_rotated', 'agent.revoked')`); n != 5 {
		t.Fatalf("%d agent events", n)
	}
	if _, err := db.Agent(ctx, "ghost"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Agent(ghost) = %v", err)
	}
}

func TestCreateAgentRejectsBadInput(t *testing.T) {
	t.Parallel()
	eachBackend(t, testCreateAgentRejectsBadInput)
}

func testCreateAgentRejectsBadInput(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := openTest(t)
	good := Agent{Name: "a", Team: "t", Roles: []string{"agent"}}
	tests := []struct {
		name string
		mod  func(*Agent)
		ttl  time.Duration
		want string
	}{
		{"no name", func(a *Agent) { a.Name = "" }, time.Hour, "agent name"},
		{"colon", func(a *Agent) { a.Name = "a:b" }, time.Hour, "agent name"},
		{"no team", func(a *Agent) { a.Team = "" }, time.Hour, "team name"},
		{"bad role", func(a *Agent) { a.Roles = []string{"a b"} }, time.Hour, "role name"},
		{"bad attribute", func(a *Agent) { a.Attributes = map[string]string{"": "x"} }, time.Hour, "attribute"},
		{"zero ttl", func(a *Agent) {}, 0, "ttl"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			a := good
			tt.mod(&a)
			if _, err := db.CreateAgent(ctx, a, tt.ttl, "x"); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

func FuzzParseToken(f *testing.F) {
	for _, s := range []string{newToken(), "", "tg_", "tg_" + strings.Repeat("A", 43), "tg_" + strings.Repeat("_", 43), "tg_" + strings.Repeat("A", 42) + "B", "Bearer x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		_, err := parseToken(s)
		if err != nil {
			// The message never depends on (so never echoes) the presented token.
			_, fixed := parseToken("")
			if !errors.Is(err, ErrTokenMalformed) || err.Error() != fixed.Error() {
				t.Fatalf("error %v", err)
			}
			return
		}
		if !tokenShape.MatchString(s) {
			t.Fatalf("accepted %q", s)
		}
	})
}

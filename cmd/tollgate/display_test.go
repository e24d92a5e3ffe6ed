package main

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tollgatehq/tollgate/approvals"
	"github.com/tollgatehq/tollgate/approvals/display"
	"github.com/tollgatehq/tollgate/ledger"
	"github.com/tollgatehq/tollgate/server"
)

const (
	forgedLine  = "ok\nSTATE   approved by security\u202e"
	forgedCost  = "Claude Code\n\n*Quoted cost (max)*\n0.01 USD ✅ pre-approved"
	terminalEsc = "\x1b[2J\x1b[1;1Hall clear\x9b31m\u200b\u2066"
)

// onlyCleanLines fails when out carries a rune display removes (other than
// the line breaks between lines) or more lines than want.
func onlyCleanLines(t *testing.T, what, out string, lines int) {
	t.Helper()
	for _, r := range out {
		if r != '\n' && display.Forbidden(r) {
			t.Errorf("%s prints U+%04X:\n%s", what, r, out)
			break
		}
	}
	if n := strings.Count(strings.TrimRight(out, "\n"), "\n") + 1; lines > 0 && n != lines {
		t.Errorf("%s prints %d lines, want %d: a value broke its line\n%s", what, n, lines, out)
	}
}

// TestAttackCLIApprovalsForgeLines: what an agent or its client wrote reaches
// `tollgate approvals list` and `approvals show` as one clean line per value.
func TestAttackCLIApprovalsForgeLines(t *testing.T) {
	t.Setenv("TOLLGATE_CONFIG", "")
	ctx := context.Background()
	db := filepath.Join(t.TempDir(), "t.db")
	l, err := ledger.Open(ctx, db, ledger.WithMigrations(approvals.Migrations), ledger.WithAuditKey(cliAuditKey(t)))
	if err != nil {
		t.Fatal(err)
	}
	ap, err := server.NewApprovals(l, nil, server.Default(), server.ApprovalHooks{})
	if err != nil {
		t.Fatal(err)
	}
	req, err := ap.Request(ctx, approvals.Request{
		OperationID: "op_aaaaaaaaaaaaaaaaaaaaaaaaaa", Tool: "register_domain", Agent: "local", Team: "local",
		Client: forgedCost, Summary: "Register x.dev" + forgedLine, Reason: forgedLine + terminalEsc,
		Args:         []approvals.Field{{Label: "Domain\nSTATE", Value: "x.dev" + terminalEsc}},
		Module:       &approvals.Module{Name: "worker.js", FirstLines: "line 1\nline 2" + terminalEsc},
		AmountMicros: 12_180_000, Currency: "USD", AmountText: "12.18 USD", ArgsHash: strings.Repeat("a", 64),
		Irreversible: true, Quorum: 1, ExpiresAt: time.Now().Add(time.Hour),
	})
	if err != nil {
		t.Fatal(err)
	}
	_ = l.Close()
	onlyCleanLines(t, "approvals list", mustRun(t, db, "approvals", "list"), 1) // one sentence per request
	// ID line, operation, agent, amount, expires, quorum, reason, policy, one argument, module and its two lines.
	show := mustRun(t, db, "approvals", "show", req.ID)
	onlyCleanLines(t, "approvals show", show, 12)
	if !strings.Contains(show, "via Claude Code  *Quoted cost (max)* 0.01 USD") {
		t.Errorf("the client name is not shown on its own line's end:\n%s", show)
	}
}

// TestAttackCLIAuditShowForgesLines: `tollgate audit show` prints the
// operation's reason and event details as clean single lines.
func TestAttackCLIAuditShowForgesLines(t *testing.T) {
	t.Setenv("TOLLGATE_CONFIG", "")
	ctx := context.Background()
	db := filepath.Join(t.TempDir(), "t.db")
	l, err := ledger.Open(ctx, db, ledger.WithAuditKey(cliAuditKey(t)))
	if err != nil {
		t.Fatal(err)
	}
	args, _ := json.Marshal(map[string]string{"domain": "x.dev"})
	op, _, err := l.CreateOperation(ctx, ledger.NewOperation{
		Agent: "local", Team: "local", Tool: "register_domain", Resource: "domain:x.dev", Args: args,
		ArgsHash: strings.Repeat("b", 64), Reason: forgedLine + terminalEsc,
		Client: ledger.ClientInfo{Name: forgedCost, Version: terminalEsc},
	}, ledger.NewEvent("call.received", "agent:local", "", map[string]any{"client": forgedCost + terminalEsc}))
	if err != nil {
		t.Fatal(err)
	}
	_ = l.Close()
	out := mustRun(t, db, "audit", "show", op.ID)
	onlyCleanLines(t, "audit show", out, 0)
	if strings.Count(out, "STATE") > 1 || !strings.Contains(out, "reason: ok STATE   approved by security") {
		t.Errorf("audit show:\n%s", out)
	}
}

// TestAttackServeLogLinesAreQuoted: `tollgate serve` logs with slog's text
// handler, which quotes a value holding a line break, a control or a bidi
// character, so a client name cannot forge a log line.
func TestAttackServeLogLinesAreQuoted(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	log, err := newLogger(&buf, "info", "text")
	if err != nil {
		t.Fatal(err)
	}
	log.Info("call", slog.String("client", forgedCost+terminalEsc))
	out := buf.String()
	if strings.Count(out, "\n") != 1 || strings.ContainsAny(out, "\x1b\u202e\u2066\u200b\x9b") {
		t.Fatalf("log line %q", out)
	}
	// --log-format json escapes line breaks and controls: one line, no
	// terminal escape.
	buf.Reset()
	if log, err = newLogger(&buf, "info", "json"); err != nil {
		t.Fatal(err)
	}
	log.Info("call", slog.String("client", forgedCost+terminalEsc))
	if out := buf.String(); strings.Count(out, "\n") != 1 || strings.ContainsAny(out, "\x1b\x9b") {
		t.Fatalf("json log line %q", out)
	}
}

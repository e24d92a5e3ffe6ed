package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/tollgatehq/tollgate/approvals"
	"github.com/tollgatehq/tollgate/approvals/web"
	"github.com/tollgatehq/tollgate/cloudflare"
	"github.com/tollgatehq/tollgate/ledger"
	"github.com/tollgatehq/tollgate/ledger/money"
	"github.com/tollgatehq/tollgate/tools"
)

// ConsoleBase is the console's address: console.public_url, or the HTTP
// listener's own address ("" under stdio, where there is no listener).
func (c Config) ConsoleBase() string {
	if c.Console.PublicURL != "" {
		return strings.TrimSuffix(c.Console.PublicURL, "/")
	}
	if c.Transport == "stdio" {
		return ""
	}
	host, port, err := net.SplitHostPort(c.Listen)
	if err != nil {
		return ""
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	scheme := "http"
	if c.TLS.Cert != "" {
		scheme = "https"
	}
	return scheme + "://" + net.JoinHostPort(host, port)
}

// consoleSource is the console's view of the ledger and the pipeline.
type consoleSource struct {
	s *Server

	auditMu  sync.Mutex // one verification at a time
	audit    web.AuditStatus
	auditAt  time.Time
	scriptMu sync.Mutex
	scripts  map[string]scriptEntry // by approval request id
	changes  changeFeed
}

var _ web.Source = (*consoleSource)(nil)

type scriptEntry struct {
	ch *web.ScriptChange
	at time.Time
}

// Cache lifetimes: the chain is verified at most this often for the page,
// and a Worker's live script is fetched (a minted token) at most this often
// per request.
const (
	auditCacheFor  = 30 * time.Second
	scriptCacheFor = 5 * time.Minute
	maxScripts     = 64
)

func newConsoleSource(s *Server) *consoleSource {
	return &consoleSource{s: s, scripts: map[string]scriptEntry{}, changes: changeFeed{db: s.deps.DB, every: 500 * time.Millisecond}}
}

func consoleOperation(op ledger.Operation) web.Operation {
	return web.Operation{
		ID: op.ID, Tool: op.Tool, Resource: op.Resource, Agent: op.Agent, Team: op.Team, State: string(op.State),
		Reason: op.Reason, Client: clientLabel(op.Client), Quote: op.Quote, Charged: op.Charged,
		ErrorCode: op.ErrorCode, Error: op.Error, CreatedAt: op.CreatedAt, UpdatedAt: op.UpdatedAt, ExpiresAt: op.ExpiresAt,
	}
}

func (c *consoleSource) Operation(ctx context.Context, id string) (web.Operation, error) {
	op, err := c.s.deps.DB.Operation(ctx, id)
	if errors.Is(err, ledger.ErrNotFound) {
		return web.Operation{}, web.ErrNotFound
	}
	if err != nil {
		return web.Operation{}, err
	}
	out := consoleOperation(op)
	if t, ok := tools.Find(op.Tool); ok && t.Approval.Consequence != nil {
		out.Consequence = t.Approval.Consequence(op.Args)
	}
	// Where the quote came from is in the planning event.
	_ = c.s.deps.DB.Events(ctx, ledger.EventQuery{OperationID: id, Types: []string{"operation.planned"}}, func(e ledger.Event) error {
		var d struct {
			Basis string `json:"basis"`
		}
		if json.Unmarshal(e.Data, &d) == nil && d.Basis != "" {
			out.Basis = d.Basis
		}
		return nil
	})
	return out, nil
}

func (c *consoleSource) Operations(ctx context.Context, cursor string, limit int) ([]web.Operation, string, error) {
	ops, next, err := c.s.deps.DB.ListOperations(ctx, ledger.OperationQuery{Cursor: cursor, Limit: limit})
	if err != nil {
		return nil, "", err
	}
	out := make([]web.Operation, len(ops))
	for i, op := range ops {
		out[i] = consoleOperation(op)
	}
	return out, next, nil
}

func (c *consoleSource) Timeline(ctx context.Context, id string) ([]web.TimelineEntry, error) {
	op, err := c.s.deps.DB.Operation(ctx, id)
	if err != nil {
		return nil, err
	}
	var out []web.TimelineEntry
	err = c.s.deps.DB.Events(ctx, ledger.EventQuery{OperationID: id}, func(e ledger.Event) error {
		out = append(out, web.TimelineEntry{At: e.At, Elapsed: e.At.Sub(op.CreatedAt).Round(time.Millisecond), Event: e.Type, Actor: e.Actor, Detail: EventDetail(e)})
		return nil
	})
	return out, err
}

func (c *consoleSource) Budgets(ctx context.Context) ([]web.Budget, error) {
	sts, err := c.s.deps.DB.BudgetStatuses(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]web.Budget, len(sts))
	for i, st := range sts {
		out[i] = web.Budget{Scope: string(st.Budget.Scope), Window: string(st.Budget.Window), Limit: st.Budget.Limit,
			Spent: st.Spent, Held: st.Held, Remaining: st.Remaining, ResetsAt: st.ResetsAt}
	}
	return out, nil
}

// Headroom is every budget of the request's agent, team and the global
// scope, before and after the request's amount. While the request is
// pending its hold is already counted, so before adds it back.
func (c *consoleSource) Headroom(ctx context.Context, r approvals.Request) ([]web.Headroom, error) {
	sts, err := c.s.deps.DB.BudgetStatuses(ctx, ledger.AgentScope(r.Agent), ledger.TeamScope(r.Team), ledger.GlobalScope)
	if err != nil {
		return nil, err
	}
	amount := money.Money{Micros: r.AmountMicros, Currency: r.Currency}
	out := make([]web.Headroom, 0, len(sts))
	for _, st := range sts {
		h := web.Headroom{Scope: string(st.Budget.Scope), Window: string(st.Budget.Window), Limit: st.Budget.Limit,
			Before: st.Remaining, After: st.Remaining, Fits: true}
		if st.Remaining.Currency == amount.Currency {
			if r.State == approvals.StatePending {
				h.Before.Micros = min(st.Budget.Limit.Micros, st.Remaining.Micros+amount.Micros)
			} else {
				h.After.Micros = st.Remaining.Micros - amount.Micros
			}
			h.Fits = h.Before.Micros >= amount.Micros
			h.After.Micros = max(0, h.After.Micros)
		}
		out = append(out, h)
	}
	return out, nil
}

func (c *consoleSource) DailySpend(ctx context.Context, since time.Time) ([]web.DaySpend, error) {
	ds, err := c.s.deps.DB.DailySpend(ctx, since)
	if err != nil {
		return nil, err
	}
	out := make([]web.DaySpend, len(ds))
	for i, d := range ds {
		out[i] = web.DaySpend{Day: d.Day, Amount: d.Amount, Operations: d.Operations}
	}
	return out, nil
}

// AuditStatus verifies the whole chain, at most every auditCacheFor.
func (c *consoleSource) AuditStatus(ctx context.Context) (web.AuditStatus, error) {
	c.auditMu.Lock()
	defer c.auditMu.Unlock()
	now := c.s.deps.Clock()
	if !c.auditAt.IsZero() && now.Sub(c.auditAt) < auditCacheFor {
		return c.audit, nil
	}
	rep, err := c.s.deps.DB.Verify(ctx)
	if err != nil {
		return web.AuditStatus{}, err
	}
	c.audit = web.AuditStatus{OK: rep.OK, Checked: rep.Checked, BrokenSeq: rep.BrokenSeq, Reason: rep.Reason, VerifiedAt: now,
		Note: "Every event holds the hash of the one before it; the check recomputes every link from the first event."}
	c.auditAt = now
	return c.audit, nil
}

// ScriptChange compares a Worker deploy's module with the script live at
// Cloudflare, fetched through the pipeline with a read-only (inspect) token
// minted and deleted for it and audited like any other; when Cloudflare
// cannot be asked, with the last version tollgate deployed, and says which.
func (c *consoleSource) ScriptChange(ctx context.Context, r approvals.Request) (*web.ScriptChange, error) {
	t, ok := tools.Find(r.Tool)
	if !ok || t.Approval.ReplacedScript == nil {
		return nil, nil
	}
	c.scriptMu.Lock()
	if e, ok := c.scripts[r.ID]; ok && c.s.deps.Clock().Sub(e.at) < scriptCacheFor {
		c.scriptMu.Unlock()
		return e.ch, nil
	}
	c.scriptMu.Unlock()
	ch, err := c.scriptChange(ctx, r, t.Approval.ReplacedScript)
	if err != nil {
		return nil, err
	}
	c.scriptMu.Lock()
	defer c.scriptMu.Unlock()
	if len(c.scripts) >= maxScripts {
		clear(c.scripts)
	}
	c.scripts[r.ID] = scriptEntry{ch: ch, at: c.s.deps.Clock()}
	return ch, nil
}

func (c *consoleSource) scriptChange(ctx context.Context, r approvals.Request, replaced func(json.RawMessage) (string, error)) (*web.ScriptChange, error) {
	db := c.s.deps.DB
	op, err := db.Operation(ctx, r.OperationID)
	if err != nil {
		return nil, err
	}
	script, err := replaced(op.Args)
	if err != nil {
		return nil, fmt.Errorf("read the deploy's arguments: %w", err)
	}
	if op.BlobSHA256 == "" {
		return nil, errors.New("the operation keeps no module")
	}
	module, err := db.Blob(ctx, op.BlobSHA256)
	if err != nil {
		return nil, fmt.Errorf("read the module: %w", err)
	}
	ch := &web.ScriptChange{Script: script, New: string(module)}
	var live *cloudflare.Script
	cfErr := c.s.pipe.withSession(ctx, cloudflare.PurposeInspect, "", func(s *cloudflare.Session) error {
		var err error
		live, err = s.GetWorker(ctx, script)
		return err
	})
	switch {
	case cfErr == nil:
		ch.Old = string(live.Main)
		ch.From = fmt.Sprintf("the script live at Cloudflare (etag %s, modified %s), fetched just now with a read-only token",
			live.Etag, live.ModifiedOn.UTC().Format(time.RFC3339))
		return ch, nil
	case errors.Is(cfErr, cloudflare.ErrNotFound):
		ch.Missing = "No script named " + script + " is live at Cloudflare: this deploy creates it."
		return ch, nil
	}
	// Cloudflare could not be asked: the last version tollgate deployed with
	// the same tool.
	prev, err := db.Succeeded(ctx, op.Tool, op.Resource, 20)
	if err != nil {
		return nil, err
	}
	for _, p := range prev {
		if name, err := replaced(p.Args); err != nil || name != script || p.BlobSHA256 == "" {
			continue
		}
		old, err := db.Blob(ctx, p.BlobSHA256)
		if err != nil {
			return nil, err
		}
		ch.Old = string(old)
		ch.From = fmt.Sprintf("the last version tollgate deployed (operation %s, %s); Cloudflare could not be asked: %v",
			p.ID, p.UpdatedAt.UTC().Format(time.RFC3339), cfErr)
		return ch, nil
	}
	ch.Missing = fmt.Sprintf("Cloudflare could not be asked (%v) and tollgate never deployed %s, so there is nothing to compare with.", cfErr, script)
	return ch, nil
}

func (c *consoleSource) Changes() (<-chan struct{}, func()) { return c.changes.subscribe() }

// changeFeed tells subscribers that the ledger changed, in this process or
// any other on the database: it polls the audit chain's head (every change
// appends an event, and reading the head is one index lookup) while anyone
// listens.
type changeFeed struct {
	db    *ledger.DB
	every time.Duration

	mu   sync.Mutex
	subs map[chan struct{}]struct{}
	stop context.CancelFunc
}

func (f *changeFeed) subscribe() (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.subs == nil {
		f.subs = map[chan struct{}]struct{}{}
	}
	f.subs[ch] = struct{}{}
	if f.stop == nil {
		ctx, stop := context.WithCancel(context.Background())
		f.stop = stop
		go f.poll(ctx)
	}
	return ch, func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		delete(f.subs, ch)
		if len(f.subs) == 0 && f.stop != nil {
			f.stop()
			f.stop = nil
		}
	}
}

func (f *changeFeed) poll(ctx context.Context) {
	t := time.NewTicker(f.every)
	defer t.Stop()
	last, _ := f.db.AuditSeq(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		seq, err := f.db.AuditSeq(ctx)
		if err != nil || seq == last {
			continue
		}
		last = seq
		f.mu.Lock()
		for ch := range f.subs {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
		f.mu.Unlock()
	}
}

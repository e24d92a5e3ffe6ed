package server

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/mark3labs/mcp-go/mcp"

	"github.com/tollgatehq/tollgate/approvals"
	"github.com/tollgatehq/tollgate/ledger"
)

// onDecided reacts to a final approval decision, whether it arrived in this
// process (Slack click) or another (the CLI approver, seen by the poller).
// The Operation's state transition is the lock: a decision acts once.
func (p *Pipeline) onDecided(ctx context.Context, req approvals.Request) {
	awaiting := []ledger.State{ledger.StateAwaitingApproval}
	switch req.State {
	case approvals.StateApproved:
		_, err := p.db.Transition(ctx, req.OperationID, ledger.StateApproved, ledger.TransitionOpts{From: awaiting, Actor: votersActor(req)},
			ledger.NewEvent("approval.granted", votersActor(req), req.OperationID, map[string]any{
				"approval_id": req.ID, "approvals": req.Approvals(), "needed": max(req.Quorum, 1), "voters": voterNames(req),
			}))
		if errors.Is(err, ledger.ErrStateConflict) {
			return
		}
		if err != nil {
			p.internal(ctx, req.OperationID, "record approval", err)
			return
		}
		p.watch.notify(req.OperationID)
		p.tellDecided(req, mcp.LoggingLevelNotice, "approved by "+strings.Join(voterNames(req), ", ")+"; executing now")
		p.goRun(func(ctx context.Context) { p.execute(ctx, req.OperationID) })
	case approvals.StateDenied:
		why := "denied by " + strings.Join(voterNames(req), ", ")
		if req.DecidedReason != "" {
			why += ": " + req.DecidedReason
		}
		if p.releaseIf(ctx, req.OperationID, awaiting, ledger.StateDenied, "denied_by_approver", why) {
			p.tellDecided(req, mcp.LoggingLevelWarning, why)
		}
	case approvals.StateExpired:
		why := fmt.Sprintf("no approver decided before %s; the hold is released. This is an expiry, not a denial: ask again if it is still needed", req.ExpiresAt.UTC().Format(time.RFC3339))
		if p.releaseIf(ctx, req.OperationID, awaiting, ledger.StateExpired, "approval_expired", why) {
			p.tellDecided(req, mcp.LoggingLevelWarning, why)
		}
	case approvals.StateCancelled:
		why := "approval cancelled: " + req.DecidedReason
		if p.releaseIf(ctx, req.OperationID, awaiting, ledger.StateCancelled, "cancelled", why) {
			p.tellDecided(req, mcp.LoggingLevelWarning, why)
		}
	}
}

// tellDecided tells the requesting agent how its approval request ended.
func (p *Pipeline) tellDecided(req approvals.Request, level mcp.LoggingLevel, what string) {
	p.notify.tellAgent(req.Agent, level, loggerApprovals, agentMessage{
		Event: "approval_" + req.State, OperationID: req.OperationID, Tool: req.Tool, Code: req.ID,
		Message: fmt.Sprintf("%s (%s): %s", req.Tool, req.OperationID, what),
	})
}

// releaseIf releases an Operation only while it is still in one of from, so
// a late decision can never release an Operation that is already executing.
// It reports whether this call moved it.
func (p *Pipeline) releaseIf(ctx context.Context, id string, from []ledger.State, to ledger.State, code, msg string) bool {
	_, err := p.db.ReleaseFrom(ctx, id, from, to, code, msg)
	if err != nil && !errors.Is(err, ledger.ErrStateConflict) {
		p.log.Error("release failed", "operation", id, "to", to, "err", err)
	}
	p.watch.notify(id)
	return err == nil
}

func voterNames(req approvals.Request) []string {
	var out []string
	for _, v := range req.Votes {
		out = append(out, v.Approver)
	}
	if len(out) == 0 {
		out = []string{"nobody"}
	}
	return out
}

func votersActor(req approvals.Request) string {
	var parts []string
	for _, v := range req.Votes {
		parts = append(parts, v.Via+":"+v.Approver)
	}
	if len(parts) == 0 {
		return "system"
	}
	return strings.Join(parts, ",")
}

// recover runs once on start: sweep leftover tokens, release holds of
// Operations that never reached Cloudflare, reconcile the ones that might
// have, and execute the ones that were approved but not started.
func (p *Pipeline) recover(ctx context.Context, staleAfter time.Duration) error {
	if n, err := p.broker.Sweep(ctx); err != nil {
		p.log.Warn("token sweep failed", "err", err)
	} else if n > 0 {
		p.log.Info("deleted leftover tokens", "count", n)
	}
	rep, err := p.db.Recover(ctx, staleAfter)
	if err != nil {
		return fmt.Errorf("recover ledger: %w", err)
	}
	for _, op := range rep.Released {
		p.log.Info("released interrupted operation", "operation", op.ID, "state", op.State)
		if req, err := p.approvals.ByOperation(ctx, op.ID); err == nil && req.State == approvals.StatePending {
			_ = p.approvals.Cancel(ctx, req.ID, "interrupted before execution", "system")
		}
	}
	for _, op := range rep.InDoubt {
		p.goRun(func(ctx context.Context) { p.reconcile(ctx, op.ID) })
	}
	for _, op := range rep.Approved {
		p.goRun(func(ctx context.Context) { p.execute(ctx, op.ID) })
	}
	p.watchFreezes(ctx) // learns the freezes in force, so only new ones are told
	return nil
}

// loop keeps what other processes and the clock change moving: decisions
// made by the CLI approver, approval expiry, and in_doubt reconciliation.
func (p *Pipeline) loop(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	reconcileEvery := 30 * time.Second
	lastReconcile := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		p.pollAwaiting(ctx)
		p.releaseStale(ctx)
		p.watchFreezes(ctx)
		if time.Since(lastReconcile) >= reconcileEvery {
			lastReconcile = time.Now()
			p.pollInDoubt(ctx)
		}
		p.metrics.setPending(p.countPending(ctx))
	}
}

func (p *Pipeline) pollAwaiting(ctx context.Context) {
	p.eachOperation(ctx, ledger.StateAwaitingApproval, func(op ledger.Operation) {
		req, err := p.approvals.ByOperation(ctx, op.ID)
		switch {
		case err == nil && req.State != approvals.StatePending:
			p.onDecided(ctx, req)
		case op.ExpiresAt != nil && !p.now().Before(*op.ExpiresAt):
			// The request may be missing (a crash between the two writes) or
			// its own expiry not yet run: the Operation's expiry is enough.
			if err == nil {
				if _, xerr := p.approvals.ExpireDue(ctx); xerr != nil {
					p.log.Warn("approval expiry", "err", xerr)
				}
			}
			p.releaseIf(ctx, op.ID, []ledger.State{ledger.StateAwaitingApproval}, ledger.StateExpired, "approval_expired",
				"no approver decided before "+op.ExpiresAt.UTC().Format(time.RFC3339)+"; the hold is released")
		case errors.Is(err, approvals.ErrNotFound) && !op.UpdatedAt.After(p.now().Add(-staleAfter)):
			// The process that asked stopped between recording
			// awaiting_approval and recording the approval request, so no
			// human was ever asked and none can answer: release it now
			// rather than hold the budget until it expires. staleAfter
			// leaves another process's pipeline time to write the request.
			if _, mine := p.running.Load(op.ID); mine {
				return
			}
			p.releaseIf(ctx, op.ID, []ledger.State{ledger.StateAwaitingApproval}, ledger.StateFailed, "interrupted",
				"tollgate stopped before the approval request was recorded, so no approver was asked; nothing was charged, retry the call")
		}
	})
}

// staleAfter is how long an Operation may sit in planned, authorized or
// reserved, with no pipeline of this process running it, before it counts
// as left behind by a process that stopped: nothing in those states has
// reached Cloudflare, so it is failed and its hold released.
const staleAfter = time.Minute

// releaseStale fails and releases the Operations a stopped process left in
// planned, authorized or reserved once they have not moved for staleAfter.
// Recover does this once on start for those already stale then; without
// this pass an Operation interrupted less than staleAfter before a restart
// (a supervisor restarts at once) would keep its hold forever. The release
// re-checks the state it saw inside its transaction, so an Operation that
// moved on meanwhile (another process's pipeline) is left alone.
func (p *Pipeline) releaseStale(ctx context.Context) {
	cutoff := p.now().Add(-staleAfter)
	for _, st := range []ledger.State{ledger.StatePlanned, ledger.StateAuthorized, ledger.StateReserved} {
		p.eachOperation(ctx, st, func(op ledger.Operation) {
			if op.UpdatedAt.After(cutoff) {
				return
			}
			if _, mine := p.running.Load(op.ID); mine {
				return
			}
			_, err := p.db.ReleaseFrom(ctx, op.ID, []ledger.State{st}, ledger.StateFailed, "interrupted",
				fmt.Sprintf("no tollgate process moved the operation on for %s after it was %s (the process that ran it stopped), and nothing had reached Cloudflare; nothing was charged, retry the call", staleAfter, st))
			switch {
			case errors.Is(err, ledger.ErrStateConflict):
				return // it moved on meanwhile
			case err != nil:
				p.log.Error("release stale operation", "operation", op.ID, "err", err)
				return
			}
			p.log.Info("released interrupted operation", "operation", op.ID, "state", st)
			p.watch.notify(op.ID)
		})
	}
}

// pollInDoubt reconciles in_doubt Operations off the loop (a slow
// Cloudflare must not stall approvals and releases), one pass per
// Operation at a time.
func (p *Pipeline) pollInDoubt(ctx context.Context) {
	p.eachOperation(ctx, ledger.StateInDoubt, func(op ledger.Operation) {
		if _, busy := p.reconciling.LoadOrStore(op.ID, struct{}{}); busy {
			return
		}
		p.goRun(func(ctx context.Context) {
			defer p.reconciling.Delete(op.ID)
			p.reconcile(ctx, op.ID)
		})
	})
}

func (p *Pipeline) eachOperation(ctx context.Context, st ledger.State, fn func(ledger.Operation)) {
	cursor := ""
	for {
		ops, next, err := p.db.ListOperations(ctx, ledger.OperationQuery{States: []ledger.State{st}, Cursor: cursor, Limit: 100})
		if err != nil {
			p.log.Warn("list operations", "state", st, "err", err)
			return
		}
		for _, op := range ops {
			fn(op)
		}
		if next == "" {
			return
		}
		cursor = next
	}
}

// watchFreezes tells the agents a new freeze stops, whoever set it (the CLI,
// a Slack button, the auto-freeze) and in whichever process.
func (p *Pipeline) watchFreezes(ctx context.Context) {
	fs, err := p.db.Freezes(ctx)
	if err != nil {
		p.log.Warn("read freezes", "err", err)
		return
	}
	seen := make(map[string]bool, len(fs))
	for _, f := range fs {
		key := string(f.Scope) + "@" + f.At.String()
		seen[key] = true
		if p.freezes == nil || p.freezes[key] {
			continue // the first pass only learns what was frozen before start
		}
		p.notify.tell(func(pr Principal) bool {
			return f.Scope == ledger.GlobalScope || f.Scope == ledger.AgentScope(pr.Name) || (pr.Team != "" && f.Scope == ledger.TeamScope(pr.Team))
		}, mcp.LoggingLevelError, loggerFreeze, agentMessage{
			Event: "frozen", Code: string(f.Scope),
			Message: fmt.Sprintf("%s is frozen by %s: %s. Every spending call is refused and pending approvals are cancelled until a human unfreezes it; read-only tools keep working", f.Scope, f.By, f.Reason),
		})
	}
	p.freezes = seen
}

func (p *Pipeline) countPending(ctx context.Context) int {
	reqs, err := p.approvals.List(ctx, approvals.StatePending)
	if err != nil {
		return 0
	}
	return len(reqs)
}

// changes wakes a follower of Operation id: at once when this process
// changes it (watcher.notify), and every pollEvery in case another process
// did (the ledger is shared). Every follower of an Operation — a waiting
// call, get_operation's long poll, a resource subscription — takes its
// wake-ups from here, so how a change made elsewhere is noticed is decided
// in this one place. stop must be called.
func (p *Pipeline) changes(id string) (wake <-chan struct{}, stop func()) {
	ch, unsubscribe := p.watch.subscribe(id)
	out := make(chan struct{}, 1)
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(pollEvery)
		defer t.Stop()
		for {
			select {
			case <-ch:
			case <-t.C:
			case <-done:
				return
			}
			select {
			case out <- struct{}{}:
			default:
			}
		}
	}()
	return out, func() { close(done); unsubscribe() }
}

// pollEvery is how soon a follower notices a change another process made.
const pollEvery = time.Second

// follow calls changed after every change of Operation id (its state or
// its row) since from, the Operation as the follower first saw it, until
// ctx ends or the Operation has reached a final state and that was told.
func (p *Pipeline) follow(ctx context.Context, from ledger.Operation, changed func()) {
	wake, stop := p.changes(from.ID)
	defer stop()
	last := from
	for !last.State.Terminal() {
		select {
		case <-wake:
		case <-ctx.Done():
			return
		}
		op, err := p.db.Operation(ctx, from.ID)
		switch {
		case err != nil && ctx.Err() != nil:
			return
		case err != nil:
			p.log.Warn("follow operation", "operation", from.ID, "err", err)
		case op.State != last.State || !op.UpdatedAt.Equal(last.UpdatedAt):
			last = op
			changed()
		}
	}
}

// watcher wakes waiters when an Operation changes in this process; waiters
// also poll, so changes made by other processes are seen within a second.
type watcher struct {
	mu   sync.Mutex
	subs map[string]map[chan struct{}]struct{}
}

func newWatcher() *watcher { return &watcher{subs: map[string]map[chan struct{}]struct{}{}} }

func (w *watcher) subscribe(id string) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	w.mu.Lock()
	if w.subs[id] == nil {
		w.subs[id] = map[chan struct{}]struct{}{}
	}
	w.subs[id][ch] = struct{}{}
	w.mu.Unlock()
	return ch, func() {
		w.mu.Lock()
		delete(w.subs[id], ch)
		if len(w.subs[id]) == 0 {
			delete(w.subs, id)
		}
		w.mu.Unlock()
	}
}

func (w *watcher) notify(id string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for ch := range w.subs[id] {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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
		p.term.decided(req)
		p.tellDecided(req, mcp.LoggingLevelNotice, "approved by "+strings.Join(voterNames(req), ", ")+"; executing now")
		p.goRun(func(ctx context.Context) { p.execute(ctx, req.OperationID) })
	case approvals.StateDenied:
		why := "denied by " + strings.Join(voterNames(req), ", ")
		if req.DecidedReason != "" {
			why += ": " + req.DecidedReason
		}
		if p.releaseIf(ctx, req.OperationID, awaiting, ledger.StateDenied, "denied_by_approver", why) {
			p.term.decided(req)
			p.tellDecided(req, mcp.LoggingLevelWarning, why)
		}
	case approvals.StateExpired:
		why := fmt.Sprintf("no approver decided before %s; the hold is released. This is an expiry, not a denial: ask again if it is still needed", req.ExpiresAt.UTC().Format(time.RFC3339))
		if p.releaseIf(ctx, req.OperationID, awaiting, ledger.StateExpired, "approval_expired", why) {
			p.term.decided(req)
			p.tellDecided(req, mcp.LoggingLevelWarning, why)
		}
	case approvals.StateCancelled:
		why := "approval cancelled: " + req.DecidedReason
		if p.releaseIf(ctx, req.OperationID, awaiting, ledger.StateCancelled, "cancelled", why) {
			p.term.decided(req)
			p.tellDecided(req, mcp.LoggingLevelWarning, why)
		}
	}
}

// followDecision prints, on this process's terminal, the decision on the
// approval it asked for operation id, once the operation has acted on it:
// the process that delivers a vote made elsewhere (the CLI, the console or
// Slack on another replica) prints it on its own terminal, and the one whose
// terminal said the approval was needed says how it ended too (a request
// cancelled by a freeze included). The line matches what the operation did:
// an approval the operation never acted on (approved, but released
// meanwhile by a freeze) prints nothing, like onDecided.
//
// The caller counts it in p.following before starting it.
func (p *Pipeline) followDecision(ctx context.Context, id string) {
	defer p.following.Add(-1)
	defer p.term.forget(id)
	wake, stop := p.changes(id)
	defer stop()
	for {
		if req, done := p.decisionActedOn(ctx, id); done {
			if req != nil {
				p.term.decided(*req)
			}
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-wake:
		}
	}
}

// decisionActedOn reports whether operation id is past its approval, and
// the decided request when the operation followed it (nil when it ended
// some other way).
func (p *Pipeline) decisionActedOn(ctx context.Context, id string) (*approvals.Request, bool) {
	op, err := p.db.Operation(ctx, id)
	if err != nil || op.State == ledger.StateAwaitingApproval {
		return nil, false
	}
	req, err := p.approvals.ByOperation(ctx, id)
	if err != nil {
		return nil, op.State.Terminal()
	}
	// The operation state each way a request ends leaves it in.
	released := map[string]ledger.State{
		approvals.StateDenied: ledger.StateDenied, approvals.StateExpired: ledger.StateExpired, approvals.StateCancelled: ledger.StateCancelled,
	}
	switch req.State {
	case approvals.StatePending:
		// Moved on before its request ended (a fault, a freeze): the
		// request is cancelled next; an operation that ended is done.
		return nil, op.State.Terminal()
	case approvals.StateApproved:
		// Followed unless the operation was released meanwhile.
		switch op.State {
		case ledger.StateDenied, ledger.StateExpired, ledger.StateCancelled:
			return nil, true
		}
		return &req, true
	}
	if released[req.State] == op.State {
		return &req, true
	}
	return nil, true
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

// reclaim takes over the work of tollgate processes that are gone (their
// lease is dead; never a live one's, however it named the database) and
// deletes their leftover Cloudflare tokens: on start (sweep == true) and
// then every reclaimEvery, sweeping again whenever a lease was found dead.
// Operations that never reached Cloudflare are released; those that might
// have are reconciled, and approved ones are executed only after Cloudflare
// has been asked whether they already happened.
func (p *Pipeline) reclaim(ctx context.Context, sweep bool) error {
	rep, err := p.db.Reclaim(ctx)
	if err != nil {
		return fmt.Errorf("reclaim: %w", err)
	}
	if sweep || len(rep.Leases) > 0 {
		// A dead lease's record goes only once its tokens are gone: a sweep
		// that fails is tried again on the next pass.
		if p.sweepTokens(ctx) {
			if err := p.db.DropLeases(ctx, rep.Leases); err != nil {
				p.log.Warn("drop dead leases", "err", err)
			}
		}
	}
	for _, op := range rep.Released {
		p.log.Info("released interrupted operation", "operation", op.ID, "state", op.State)
		if req, err := p.approvals.ByOperation(ctx, op.ID); err == nil && req.State == approvals.StatePending {
			_ = p.approvals.Cancel(ctx, req.ID, "interrupted before execution", "system")
		}
		p.watch.notify(op.ID)
	}
	for _, op := range rep.InDoubt {
		p.watch.notify(op.ID)
		p.reconcileOnce(op.ID)
	}
	for _, op := range rep.Approved {
		p.goRun(func(ctx context.Context) { p.resume(ctx, op.ID) })
	}
	for _, op := range rep.Awaiting {
		req, err := p.approvals.ByOperation(ctx, op.ID)
		switch {
		case errors.Is(err, approvals.ErrNotFound):
			// The process that asked stopped between recording
			// awaiting_approval and recording the approval request: no human
			// was ever asked and none can answer.
			p.releaseIf(ctx, op.ID, []ledger.State{ledger.StateAwaitingApproval}, ledger.StateFailed, "interrupted",
				"tollgate stopped before the approval request was recorded, so no approver was asked; nothing was charged, retry the call")
		case err == nil && req.State != approvals.StatePending:
			p.onDecided(ctx, req)
		}
	}
	p.watchFreezes(ctx) // learns the freezes in force, so only new ones are told
	return nil
}

// sweepTokens deletes the tollgate tokens on the account whose owner lease
// is not alive: leftovers of processes that are gone. It reports whether it
// swept.
func (p *Pipeline) sweepTokens(ctx context.Context) bool {
	leases, err := p.db.Store().Leases(ctx)
	if err != nil {
		p.log.Warn("token sweep skipped: leases unreadable", "err", err)
		return false
	}
	alive := map[string]bool{}
	for _, l := range leases {
		alive[l.ID] = l.Alive
	}
	if l := p.db.Lease(); l != nil {
		alive[l.ID()] = true
	}
	n, err := p.broker.SweepDead(ctx, func(owner string) bool { return alive[owner] })
	if err != nil {
		p.log.Warn("token sweep failed; trying again on the next pass", "err", err)
		return false
	}
	if n > 0 {
		p.log.Info("deleted the tokens of processes that are gone", "count", n)
	}
	return true
}

// resume carries on an approved Operation taken over from a process that is
// gone. That process may have executed it before it died — or its record of
// doing so may be lost with a damaged database file — so Cloudflare is asked
// first: if the registration or the deploy is there, the Operation is settled
// (charged once) and nothing is sent again; only if it is not is the
// Operation executed. A failed question is asked again, never skipped.
func (p *Pipeline) resume(ctx context.Context, id string) {
	for wait := time.Second; ; wait = min(2*wait, 30*time.Second) {
		done, err := p.resumeOnce(ctx, id)
		if done {
			return
		}
		p.log.Warn("could not ask Cloudflare about a taken-over operation; asking again", "operation", id, "err", err, "retry_in", wait)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

func (p *Pipeline) resumeOnce(ctx context.Context, id string) (bool, error) {
	op, err := p.db.Operation(ctx, id)
	if err != nil {
		return ctx.Err() != nil, err
	}
	m, ok := p.muts[op.Tool]
	if op.State != ledger.StateApproved || !ok {
		p.execute(ctx, id) // not approved any more, or no tool: execute says what to do
		return true, nil
	}
	out, found, err := p.askCloudflare(ctx, op, m)
	if err != nil {
		return ctx.Err() != nil, err
	}
	if !found {
		p.execute(ctx, id)
		return true, nil
	}
	req, _ := p.approvals.ByOperation(ctx, id)
	if req.ID != "" {
		// It was executed, so its single-use approval was used.
		if err := p.approvals.Consume(ctx, req.ID, op.ArgsHash, op.Quote.Micros, op.Quote.Currency); err != nil && !errors.Is(err, approvals.ErrConsumed) {
			p.log.Warn("approval of an operation found done at Cloudflare", "operation", id, "err", err)
		}
	}
	if _, err := p.db.Transition(ctx, id, ledger.StateExecuting, ledger.TransitionOpts{From: []ledger.State{ledger.StateApproved}, Actor: "system"},
		ledger.NewEvent("recovery.found_at_cloudflare", "system", id, map[string]any{"summary": out.Summary})); err != nil {
		p.log.Error("record an operation found done at Cloudflare", "operation", id, "err", err)
		return true, nil
	}
	p.log.Warn("a taken-over approved operation had already happened at Cloudflare; settling it once instead of executing it again", "operation", id)
	p.settle(ctx, op, req.ID, out)
	return true, nil
}

// reclaimEvery is how often a process looks for the work of processes that
// are gone. A SIGKILLed process's lease is dead at once (its flock goes), so
// this is how long its work waits at most.
const reclaimEvery = 3 * time.Second

// sweepEvery is the pace of the safety passes over in_doubt and
// awaiting_approval Operations; changes themselves are followed as they
// commit.
const sweepEvery = 30 * time.Second

// loop keeps what the clock and other processes change moving: it takes over
// the work of processes that are gone, and now and then reconciles this
// process's in_doubt Operations and catches any decision not yet acted on.
func (p *Pipeline) loop(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	lastReclaim, lastSweep := time.Now(), time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		p.watchFreezes(ctx)
		if time.Since(lastReclaim) >= reclaimEvery {
			lastReclaim = time.Now()
			if err := p.reclaim(ctx, false); err != nil && ctx.Err() == nil {
				p.log.Warn("reclaim", "err", err)
			}
		}
		if time.Since(lastSweep) >= sweepEvery {
			lastSweep = time.Now()
			p.pollInDoubt(ctx)
			p.pollAwaiting(ctx)
		}
		p.metrics.setPending(p.countPending(ctx))
	}
}

// pollAwaiting is the safety net for Operations still awaiting approval
// whose request was decided (the decision's hook failed) or whose expiry
// passed (the request's own expiry did not run).
func (p *Pipeline) pollAwaiting(ctx context.Context) {
	p.eachOperation(ctx, ledger.StateAwaitingApproval, func(op ledger.Operation) {
		req, err := p.approvals.ByOperation(ctx, op.ID)
		switch {
		case err == nil && req.State != approvals.StatePending:
			p.onDecided(ctx, req)
		case op.ExpiresAt != nil && !p.now().Before(*op.ExpiresAt):
			if err == nil {
				if _, xerr := p.approvals.ExpireDue(ctx); xerr != nil {
					p.log.Warn("approval expiry", "err", xerr)
				}
			}
			p.releaseIf(ctx, op.ID, []ledger.State{ledger.StateAwaitingApproval}, ledger.StateExpired, "approval_expired",
				"no approver decided before "+op.ExpiresAt.UTC().Format(time.RFC3339)+"; the hold is released")
		}
	})
}

// pollInDoubt reconciles this process's in_doubt Operations (another live
// process reconciles its own; a dead one's are taken over by reclaim first).
func (p *Pipeline) pollInDoubt(ctx context.Context) {
	mine := ""
	if l := p.db.Lease(); l != nil {
		mine = l.ID()
	}
	p.eachOperation(ctx, ledger.StateInDoubt, func(op ledger.Operation) {
		if op.LeaseID == mine {
			p.reconcileOnce(op.ID)
		}
	})
}

// reconcileOnce reconciles an in_doubt Operation off the caller's goroutine
// (a slow Cloudflare must not stall the loop), one pass per Operation at a
// time.
func (p *Pipeline) reconcileOnce(id string) {
	if _, busy := p.reconciling.LoadOrStore(id, struct{}{}); busy {
		return
	}
	p.goRun(func(ctx context.Context) {
		defer p.reconciling.Delete(id)
		p.reconcile(ctx, id)
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
// changes it (watcher.notify) or another process commits a change to it (the
// watcher follows the store's change feed), and every pollEvery as a safety
// net. Every follower of an Operation — a waiting
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

// pollEvery is the safety net under the watcher: how often a follower
// re-reads its Operation with no news at all.
const pollEvery = 5 * time.Second

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

// watcher wakes the calls waiting on Operations: at once for a change this
// process made (notify), and for a change another process committed as soon
// as the store's change feed reports a commit (run): one query then reads
// the state of every Operation waited on, and only the ones that moved are
// woken.
type watcher struct {
	mu   sync.Mutex
	subs map[string]map[chan struct{}]struct{}
	seen map[string]ledger.State
}

func newWatcher() *watcher {
	return &watcher{subs: map[string]map[chan struct{}]struct{}{}, seen: map[string]ledger.State{}}
}

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
			delete(w.seen, id)
		}
		w.mu.Unlock()
	}
}

func (w *watcher) notify(id string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.wake(id)
}

func (w *watcher) wake(id string) {
	for ch := range w.subs[id] {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// run wakes waiters whose Operation another process moved, until ctx ends.
func (w *watcher) run(ctx context.Context, db *ledger.DB, log *slog.Logger) {
	changes, stop := db.Store().Subscribe()
	defer stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-changes:
		}
		w.mu.Lock()
		ids := make([]string, 0, len(w.subs))
		for id := range w.subs {
			ids = append(ids, id)
		}
		w.mu.Unlock()
		if len(ids) == 0 {
			continue
		}
		states, err := db.States(ctx, ids)
		if err != nil {
			if ctx.Err() == nil {
				log.Warn("read the states of waited-on operations", "err", err)
			}
			continue
		}
		w.mu.Lock()
		for id, st := range states {
			// First sight wakes too: the move may have come between the
			// waiter's own read and this one.
			if prev, ok := w.seen[id]; !ok || prev != st {
				w.wake(id)
			}
			if _, waited := w.subs[id]; waited {
				w.seen[id] = st
			}
		}
		w.mu.Unlock()
	}
}

package server

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/tollgatehq/tollgate/cloudflare"
	"github.com/tollgatehq/tollgate/ledger"
	"github.com/tollgatehq/tollgate/tools"
)

// rollingOut records the step an execution put in force and moves the
// rollout on in the background: the Operation stays executing until the
// last step (then it is settled) or until traffic goes back to the previous
// version (a failed step, a freeze, a rollback_worker call: failed with
// rolled_back, its hold released). A restart finds it executing or in_doubt
// and reconciles it, which resumes it from the step Cloudflare shows.
func (p *Pipeline) rollingOut(ctx context.Context, op ledger.Operation, reqID string, m tools.Mutation, out tools.Outcome) {
	r := out.Rollout
	if err := p.db.Append(ctx, rolloutStepEvent(op.ID, r)); err != nil {
		p.log.Error("audit rollout step", "operation", op.ID, "err", err)
	}
	p.watch.notify(op.ID)
	p.finish(ctx, reqID, out.Summary)
	p.goRun(func(ctx context.Context) { p.continueRollout(ctx, op, reqID, m, r) })
}

func rolloutStepEvent(opID string, r *tools.Rollout) ledger.Event {
	return ledger.NewEvent("rollout.step", "system", opID, map[string]any{
		"summary": fmt.Sprintf("%d%% of %s's traffic on version %s (step %d of %d)", r.Percent(), r.Script, r.Version, r.Done, len(r.Steps)),
		"step":    r.Done, "of": len(r.Steps), "percent": r.Percent(), "version": r.Version, "previous": r.Previous,
	})
}

// continueRollout puts the remaining steps in force, one interval apart,
// each under a token of its own.
func (p *Pipeline) continueRollout(ctx context.Context, op ledger.Operation, reqID string, m tools.Mutation, r *tools.Rollout) {
	ro, ok := m.(tools.RollingOut)
	if !ok {
		p.log.Error("rollout of a tool that cannot roll out", "operation", op.ID, "tool", op.Tool)
		return
	}
	for !r.Finished() {
		t := time.NewTimer(r.Interval)
		select {
		case <-t.C:
		case <-ctx.Done():
			// Shutting down: the next start reconciles and resumes it.
			t.Stop()
			return
		}
		if l := p.db.Lease(); l != nil {
			select {
			case <-l.Lost():
				return
			default:
			}
		}
		cur, err := p.db.Operation(ctx, op.ID)
		if err != nil || cur.State != ledger.StateExecuting {
			return
		}
		if f, err := p.db.FrozenFor(ctx, op.Agent, op.Team); err != nil || f != nil {
			why := "the freezes could not be read"
			if f != nil {
				why = fmt.Sprintf("%s was frozen (%s)", f.Scope, f.Reason)
			}
			p.rollBack(ctx, op, reqID, ro, r, why)
			return
		}
		spec, err := p.executeSpec(ctx, m, op)
		if err != nil {
			p.rollBack(ctx, op, reqID, ro, r, "the next step's token could not be scoped: "+err.Error())
			return
		}
		moved, stepped, interleaved := false, false, false
		var stepErr error
		err = p.withSpec(ctx, spec, op.ID, func(s *cloudflare.Session) error {
			deps, err := s.Deployments(ctx, r.Script)
			if err != nil {
				return err
			}
			if len(deps) == 0 || !r.InForce(deps[0]) {
				moved = true
				return nil
			}
			if _, stepErr = r.Step(ctx, s); stepErr != nil {
				return nil
			}
			stepped = true
			// A rollback that landed between the read above and this step
			// would be undone by it: the deployment before ours must be our
			// previous step.
			if deps, err = s.Deployments(ctx, r.Script); err == nil && len(deps) > 1 && !strings.Contains(deps[1].Message, r.Tag) {
				interleaved = true
			}
			return nil
		})
		switch {
		case interleaved:
			p.rollBack(ctx, op, reqID, ro, r, fmt.Sprintf("another deployment landed while step %d was sent", r.Done))
			return
		case moved:
			p.endRollout(ctx, op, reqID, r, "traffic was moved away from the rollout (rollback_worker or by hand) before step "+fmt.Sprint(r.Done+1))
			return
		case err != nil:
			p.rollBack(ctx, op, reqID, ro, r, "the next step could not start: "+err.Error())
			return
		case stepErr != nil:
			p.rollBack(ctx, op, reqID, ro, r, fmt.Sprintf("step %d failed: %v", r.Done+1, stepErr))
			return
		case stepped:
			if err := p.db.Append(ctx, rolloutStepEvent(op.ID, r)); err != nil {
				p.log.Error("audit rollout step", "operation", op.ID, "err", err)
			}
			p.watch.notify(op.ID)
		}
	}
	out := ro.RolloutOutcome(op.Args, r, op.Quote, "")
	p.settle(ctx, op, reqID, out)
}

// rollBack returns all traffic to the previous version and ends the
// rollout; if Cloudflare cannot be told, the Operation goes in_doubt and
// reconciliation decides from the deployment in force.
func (p *Pipeline) rollBack(ctx context.Context, op ledger.Operation, reqID string, ro tools.RollingOut, r *tools.Rollout, why string) {
	spec := cloudflare.SessionSpec{Name: "rollback", Label: op.ID, Permissions: cloudflare.Permissions{Account: []string{cloudflare.GroupWorkersRead, cloudflare.GroupWorkersWrite}}}
	err := p.withSpec(ctx, spec, op.ID, func(s *cloudflare.Session) error {
		_, err := r.Rollback(ctx, s, why)
		return err
	})
	if err != nil {
		p.log.Error("rollback failed; reconciling", "operation", op.ID, "err", err)
		if _, terr := p.db.Transition(ctx, op.ID, ledger.StateInDoubt, ledger.TransitionOpts{
			From: []ledger.State{ledger.StateExecuting}, ErrorCode: "rollback_failed", Error: why + "; rolling back failed: " + err.Error(), Actor: "system",
		}); terr != nil {
			p.log.Error("mark in_doubt", "operation", op.ID, "err", terr)
		}
		p.watch.notify(op.ID)
		return
	}
	p.endRollout(ctx, op, reqID, r, why)
}

// endRollout fails a rollout whose traffic is back on the previous
// version, releasing its hold.
func (p *Pipeline) endRollout(ctx context.Context, op ledger.Operation, reqID string, r *tools.Rollout, why string) {
	msg := "rolled back to version " + r.Previous + ": " + why
	p.release(ctx, op.ID, ledger.StateFailed, "rolled_back", msg,
		ledger.NewEvent("rollout.rolled_back", "system", op.ID, map[string]any{"summary": msg, "why": why, "version": r.Version, "previous": r.Previous, "percent": r.Percent()}))
	p.finish(ctx, reqID, "Rolled back: "+why)
}

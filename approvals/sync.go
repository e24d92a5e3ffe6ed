package approvals

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/slack-go/slack"

	"github.com/tollgatehq/tollgate/approvals/display"
	"github.com/tollgatehq/tollgate/ledger/store"
)

// Run drives the timers: expiry (at start and every ExpiryInterval), delivery
// of decisions made by other processes or lost to a crash, and the Slack post
// and update retries (every SyncInterval, with per-request backoff). It returns
// nil when ctx ends; failures are logged and retried, never fatal.
func (s *Service) Run(ctx context.Context) error {
	s.housekeep(ctx)
	s.syncDue(ctx)
	expiry := time.NewTicker(s.o.ExpiryInterval)
	defer expiry.Stop()
	retry := time.NewTicker(s.o.SyncInterval)
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-expiry.C:
			s.housekeep(ctx)
		case <-retry.C:
			s.syncDue(ctx)
		}
	}
}

func (s *Service) housekeep(ctx context.Context) {
	s.logUnlogged(ctx, s.rejected.due(s.now()))
	if _, err := s.ExpireDue(ctx); err != nil && ctx.Err() == nil {
		s.log.ErrorContext(ctx, "expire approvals", slog.String("error", err.Error()))
	}
	s.deliverDue(ctx)
	if err := s.pruneSeen(ctx); err != nil && ctx.Err() == nil {
		s.log.WarnContext(ctx, "prune replay cache", slog.String("error", err.Error()))
	}
}

// deliver runs the hook of a decided or expired request once per process at a
// time, then records that it ran. A crash between the two makes a later Run
// deliver again (at least once); Consume keeps execution single-use.
func (s *Service) deliver(ctx context.Context, id string) {
	s.mu.Lock()
	if s.inflight[id] {
		s.mu.Unlock()
		return
	}
	s.inflight[id] = true
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.inflight, id)
		s.mu.Unlock()
	}()
	// Neither the hook nor the bookkeeping may stop with the caller: a click's
	// context ends when Slack's request does, and a hook that ran must be
	// recorded. The hook keeps the caller's values (request-scoped logging).
	ctx = context.WithoutCancel(ctx)
	var dispatched sql.NullInt64
	if err := s.st.QueryRowContext(ctx, `SELECT dispatched_at FROM approval_requests WHERE id = ?`, id).Scan(&dispatched); err != nil {
		s.log.ErrorContext(ctx, "read decision delivery", slog.String("request_id", id), slog.String("error", err.Error()))
		return
	}
	if dispatched.Valid {
		return
	}
	r, err := s.loadRequest(ctx, s.st, id)
	if err != nil {
		s.log.ErrorContext(ctx, "read decided request", slog.String("request_id", id), slog.String("error", err.Error()))
		return
	}
	var hook func(context.Context, Request)
	switch r.State {
	case StateApproved, StateDenied:
		hook = s.o.OnDecided
	case StateExpired:
		hook = s.o.OnExpired
	}
	if hook == nil {
		// Left for a process that has the hook (the server picks up CLI decisions).
		return
	}
	hook(ctx, r)
	if _, err := s.st.ExecContext(ctx, `UPDATE approval_requests SET dispatched_at = ? WHERE id = ? AND dispatched_at IS NULL`, s.now().UnixNano(), id); err != nil {
		s.log.ErrorContext(ctx, "record decision delivery", slog.String("request_id", id), slog.String("error", err.Error()))
	}
}

// deliverDue hands undelivered decisions and expiries to this process's hooks.
func (s *Service) deliverDue(ctx context.Context) {
	var states []string
	if s.o.OnDecided != nil {
		states = append(states, StateApproved, StateDenied)
	}
	if s.o.OnExpired != nil {
		states = append(states, StateExpired)
	}
	if len(states) == 0 {
		return
	}
	ids, err := store.Strings(ctx, s.st, `SELECT id FROM approval_requests WHERE dispatched_at IS NULL AND state IN ('`+strings.Join(states, "','")+`')
		ORDER BY decided_at LIMIT 100`)
	if err != nil {
		if ctx.Err() == nil {
			s.log.ErrorContext(ctx, "find undelivered decisions", slog.String("error", err.Error()))
		}
		return
	}
	for _, id := range ids {
		s.deliver(ctx, id)
	}
}

// syncDue brings every Slack message whose retry is due up to date.
func (s *Service) syncDue(ctx context.Context) {
	if s.o.Notifier == nil {
		return
	}
	ids, err := store.Strings(ctx, s.st, `SELECT id FROM approval_requests WHERE slack_synced < version AND slack_next_at <= ?
		ORDER BY slack_next_at LIMIT 100`, s.now().UnixNano())
	if err != nil {
		if ctx.Err() == nil {
			s.log.ErrorContext(ctx, "find slack work", slog.String("error", err.Error()))
		}
		return
	}
	for _, id := range ids {
		if ctx.Err() != nil {
			return
		}
		s.syncRequest(ctx, id)
	}
}

// syncRequest posts or updates one request's message. Only one goroutine of the
// process syncs a request at a time; a change that arrives meanwhile makes it
// sync once more, so the message always ends on the latest state.
func (s *Service) syncRequest(ctx context.Context, id string) {
	if s.o.Notifier == nil {
		return
	}
	s.mu.Lock()
	if s.syncing[id] {
		s.again[id] = true
		s.mu.Unlock()
		return
	}
	s.syncing[id] = true
	s.mu.Unlock()
	for {
		s.syncOnce(ctx, id)
		s.mu.Lock()
		if s.again[id] {
			delete(s.again, id)
			s.mu.Unlock()
			continue
		}
		delete(s.syncing, id)
		s.mu.Unlock()
		return
	}
}

type syncState struct {
	version, synced int64
	attempts        int
}

func (s *Service) syncOnce(parent context.Context, id string) {
	// Slack calls stop with the caller; the bookkeeping around them does not,
	// so a call that happened is always recorded.
	ctx := context.WithoutCancel(parent)
	// A few rounds: a decision may land while the first post is in flight.
	for range 3 {
		var st syncState
		err := s.st.QueryRowContext(ctx, `SELECT version, slack_synced, slack_attempts FROM approval_requests WHERE id = ?`, id).
			Scan(&st.version, &st.synced, &st.attempts)
		if err != nil {
			s.log.ErrorContext(ctx, "read slack state", slog.String("request_id", id), slog.String("error", err.Error()))
			return
		}
		if st.synced >= st.version {
			return
		}
		r, err := s.loadRequest(ctx, s.st, id)
		if err != nil {
			s.log.ErrorContext(ctx, "read request for slack", slog.String("request_id", id), slog.String("error", err.Error()))
			return
		}
		callCtx, cancel := context.WithTimeout(parent, s.o.SlackTimeout)
		if r.SlackTS == "" {
			if r.State != StatePending {
				cancel()
				// Never posted and no longer pending: nothing to ask anyone.
				_, err = s.st.ExecContext(ctx, `UPDATE approval_requests SET slack_synced = ? WHERE id = ? AND slack_ts = ''`, st.version, id)
				if err != nil {
					s.log.ErrorContext(ctx, "record slack state", slog.String("request_id", id), slog.String("error", err.Error()))
				}
				return
			}
			ref, err := s.o.Notifier.Post(callCtx, r)
			cancel()
			if err != nil {
				s.scheduleRetry(ctx, id, st.attempts, "post", err)
				return
			}
			_, err = s.st.ExecContext(ctx, `UPDATE approval_requests SET slack_channel = ?, slack_ts = ?, slack_synced = ?,
				slack_attempts = 0, slack_next_at = 0, slack_error = '' WHERE id = ? AND slack_ts = ''`, ref.Channel, ref.TS, st.version, id)
			if err != nil {
				s.log.ErrorContext(ctx, "record slack message", slog.String("request_id", id), slog.String("error", err.Error()))
				return
			}
			s.log.InfoContext(ctx, "approval posted to slack", slog.String("request_id", id), slog.String("channel", ref.Channel), slog.String("ts", ref.TS))
			continue
		}
		err = s.o.Notifier.Update(callCtx, MessageRef{Channel: r.SlackChannel, TS: r.SlackTS}, r)
		cancel()
		if err != nil {
			s.scheduleRetry(ctx, id, st.attempts, "update", err)
			return
		}
		_, err = s.st.ExecContext(ctx, `UPDATE approval_requests SET slack_synced = CASE WHEN slack_synced > ?1 THEN slack_synced ELSE ?1 END,
			slack_attempts = 0, slack_next_at = 0, slack_error = '' WHERE id = ?2`, st.version, id)
		if err != nil {
			s.log.ErrorContext(ctx, "record slack state", slog.String("request_id", id), slog.String("error", err.Error()))
			return
		}
	}
}

// retryDelay is RetryMin doubled per failed attempt, capped at RetryMax.
func (s *Service) retryDelay(attempts int) time.Duration {
	d := s.o.RetryMin
	for i := 0; i < attempts && d < s.o.RetryMax; i++ {
		d *= 2
	}
	return min(d, s.o.RetryMax)
}

func (s *Service) scheduleRetry(ctx context.Context, id string, attempts int, what string, cause error) {
	delay := s.retryDelay(attempts)
	var rl *slack.RateLimitedError
	if errors.As(cause, &rl) && rl.RetryAfter > delay {
		delay = rl.RetryAfter
	}
	next := s.now().Add(delay)
	msg := display.Text(cause.Error(), 500)
	if _, err := s.st.ExecContext(ctx, `UPDATE approval_requests SET slack_attempts = slack_attempts + 1, slack_next_at = ?, slack_error = ?
		WHERE id = ?`, next.UnixNano(), msg, id); err != nil {
		s.log.ErrorContext(ctx, "record slack failure", slog.String("request_id", id), slog.String("error", err.Error()))
	}
	s.log.WarnContext(ctx, "slack call failed; the request is unchanged and the call will be retried",
		slog.String("request_id", id), slog.String("call", what), slog.Int("attempt", attempts+1),
		slog.Duration("retry_in", delay), slog.String("error", msg))
}

// Notify posts a plain alert to the approvals channel (budget blocks,
// auto-freeze). Without a Notifier it only logs.
func (s *Service) Notify(ctx context.Context, text string) error {
	if s.o.Notifier == nil {
		s.log.InfoContext(ctx, "alert (no slack configured)", slog.String("text", text))
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.o.SlackTimeout)
	defer cancel()
	if err := s.o.Notifier.Alert(ctx, text); err != nil {
		return fmt.Errorf("notify: %w", err)
	}
	return nil
}

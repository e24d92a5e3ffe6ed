package approvals

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/tollgatehq/tollgate/approvals/display"
	"github.com/tollgatehq/tollgate/ledger/store"
)

// Run drives the timers: expiry (at start and every ExpiryInterval), delivery
// of decisions made by other processes (as soon as they commit: the store's
// change feed) or lost to a crash, the channels' own housekeeping, and the
// channel post and update retries (every SyncInterval, with per-post
// backoff). It returns nil when ctx ends; failures are logged and retried,
// never fatal.
func (s *Service) Run(ctx context.Context) error {
	changes, stop := s.st.Subscribe()
	defer stop()
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
		case <-changes:
			s.deliverDue(ctx)
		case <-expiry.C:
			s.housekeep(ctx)
		case <-retry.C:
			s.syncDue(ctx)
		}
	}
}

// Tick does one round of Run's work now: expiry, delivery of decisions,
// the channels' housekeeping, and every post whose retry is due.
func (s *Service) Tick(ctx context.Context) {
	s.housekeep(ctx)
	s.syncDue(ctx)
}

func (s *Service) housekeep(ctx context.Context) {
	if _, err := s.ExpireDue(ctx); err != nil && ctx.Err() == nil {
		s.log.ErrorContext(ctx, "expire approvals", slog.String("error", err.Error()))
	}
	s.deliverDue(ctx)
	for _, c := range s.channelList() {
		if h, ok := c.(Housekeeper); ok {
			h.Housekeep(ctx)
		}
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

// syncDue brings every post whose retry is due up to date.
func (s *Service) syncDue(ctx context.Context) {
	for _, c := range s.channelList() {
		ids, err := store.Strings(ctx, s.st, `SELECT request_id FROM approval_posts WHERE channel = ? AND synced < version AND next_at <= ?
			ORDER BY next_at LIMIT 100`, c.Name(), s.now().UnixNano())
		if err != nil {
			if ctx.Err() == nil {
				s.log.ErrorContext(ctx, "find channel work", slog.String("channel", c.Name()), slog.String("error", err.Error()))
			}
			continue
		}
		for _, id := range ids {
			if ctx.Err() != nil {
				return
			}
			s.syncPost(ctx, c, id)
		}
	}
}

// syncRequest brings request id's post in every channel up to date.
func (s *Service) syncRequest(ctx context.Context, id string) {
	for _, c := range s.channelList() {
		s.syncPost(ctx, c, id)
	}
}

// syncPost posts or updates one request's post in one channel. Only one
// goroutine of the process syncs a post at a time; a change that arrives
// meanwhile makes it sync once more, so the post always ends on the latest state.
func (s *Service) syncPost(ctx context.Context, c Channel, id string) {
	key := c.Name() + "\x00" + id
	s.mu.Lock()
	if s.syncing[key] {
		s.again[key] = true
		s.mu.Unlock()
		return
	}
	s.syncing[key] = true
	s.mu.Unlock()
	for {
		s.syncOnce(ctx, c, id)
		s.mu.Lock()
		if s.again[key] {
			delete(s.again, key)
			s.mu.Unlock()
			continue
		}
		delete(s.syncing, key)
		s.mu.Unlock()
		return
	}
}

type postState struct {
	ref             string
	version, synced int64
	attempts        int
}

func (s *Service) syncOnce(parent context.Context, c Channel, id string) {
	// Channel calls stop with the caller; the bookkeeping around them does
	// not, so a call that happened is always recorded.
	ctx := context.WithoutCancel(parent)
	name := c.Name()
	logErr := func(msg string, err error) {
		s.log.ErrorContext(ctx, msg, slog.String("request_id", id), slog.String("channel", name), slog.String("error", err.Error()))
	}
	// A few rounds: a decision may land while the first post is in flight.
	for range 3 {
		var st postState
		err := s.st.QueryRowContext(ctx, `SELECT ref, version, synced, attempts FROM approval_posts WHERE request_id = ? AND channel = ?`, id, name).
			Scan(&st.ref, &st.version, &st.synced, &st.attempts)
		if errors.Is(err, sql.ErrNoRows) {
			return // the request was made before this channel was attached
		}
		if err != nil {
			logErr("read post state", err)
			return
		}
		if st.synced >= st.version {
			return
		}
		r, err := s.loadRequest(ctx, s.st, id)
		if err != nil {
			logErr("read request for a channel", err)
			return
		}
		callCtx, cancel := context.WithTimeout(parent, s.o.ChannelTimeout)
		if st.ref == "" {
			if r.State != StatePending {
				cancel()
				// Never posted and no longer pending: nothing to ask anyone.
				if _, err := s.st.ExecContext(ctx, `UPDATE approval_posts SET synced = ? WHERE request_id = ? AND channel = ? AND ref = ''`, st.version, id, name); err != nil {
					logErr("record post state", err)
				}
				return
			}
			// Claim the first post across processes: the one holding the call
			// and another's retry sweep may both find it unposted here, and a
			// channel call cannot be taken back. The claim lasts the call and
			// as long again (bookkeeping, clocks of other hosts); a process
			// that dies mid-post leaves it to lapse, and another posts.
			now := s.now()
			res, err := s.st.ExecContext(ctx, `UPDATE approval_posts SET claimed_until = ?
				WHERE request_id = ? AND channel = ? AND ref = '' AND claimed_until <= ?`,
				now.Add(2*s.o.ChannelTimeout).UnixNano(), id, name, now.UnixNano())
			if err != nil {
				cancel()
				logErr("claim post", err)
				return
			}
			if n, err := res.RowsAffected(); err != nil || n == 0 {
				cancel()
				return // another process is posting it (or just did): it records the outcome
			}
			ref, err := c.Post(callCtx, r)
			cancel()
			if err != nil {
				s.scheduleRetry(ctx, name, id, st.attempts, "post", err)
				return
			}
			if ref == "" {
				ref = "-" // posted, but the channel keeps no reference
			}
			if _, err := s.st.ExecContext(ctx, `UPDATE approval_posts SET ref = ?, synced = ?, attempts = 0, next_at = 0, error = ''
				WHERE request_id = ? AND channel = ? AND ref = ''`, ref, st.version, id, name); err != nil {
				logErr("record post", err)
				return
			}
			s.log.InfoContext(ctx, "approval posted", slog.String("request_id", id), slog.String("channel", name), slog.String("ref", ref))
			continue
		}
		err = c.Update(callCtx, st.ref, r)
		cancel()
		if err != nil {
			s.scheduleRetry(ctx, name, id, st.attempts, "update", err)
			return
		}
		if _, err := s.st.ExecContext(ctx, `UPDATE approval_posts SET synced = CASE WHEN synced > ?1 THEN synced ELSE ?1 END,
			attempts = 0, next_at = 0, error = '' WHERE request_id = ?2 AND channel = ?3`, st.version, id, name); err != nil {
			logErr("record post state", err)
			return
		}
	}
}

// PostRef returns what channel posted for request id ("" when nothing yet).
func (s *Service) PostRef(ctx context.Context, id, channel string) (string, error) {
	var ref string
	err := s.st.QueryRowContext(ctx, `SELECT ref FROM approval_posts WHERE request_id = ? AND channel = ?`, id, channel).Scan(&ref)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("post of %s in %s: %w", id, channel, err)
	}
	return ref, nil
}

// retryDelay is RetryMin doubled per failed attempt, capped at RetryMax.
func (s *Service) retryDelay(attempts int) time.Duration {
	d := s.o.RetryMin
	for i := 0; i < attempts && d < s.o.RetryMax; i++ {
		d *= 2
	}
	return min(d, s.o.RetryMax)
}

func (s *Service) scheduleRetry(ctx context.Context, channel, id string, attempts int, what string, cause error) {
	delay := s.retryDelay(attempts)
	var ra RetryAfterError
	if errors.As(cause, &ra) && ra.RetryAfter() > delay {
		delay = ra.RetryAfter()
	}
	next := s.now().Add(delay)
	msg := display.Text(cause.Error(), 500)
	if _, err := s.st.ExecContext(ctx, `UPDATE approval_posts SET attempts = attempts + 1, next_at = ?, error = ?, claimed_until = 0
		WHERE request_id = ? AND channel = ?`, next.UnixNano(), msg, id, channel); err != nil {
		s.log.ErrorContext(ctx, "record channel failure", slog.String("request_id", id), slog.String("channel", channel), slog.String("error", err.Error()))
	}
	s.log.WarnContext(ctx, "channel call failed; the request is unchanged and the call will be retried",
		slog.String("request_id", id), slog.String("channel", channel), slog.String("call", what), slog.Int("attempt", attempts+1),
		slog.Duration("retry_in", delay), slog.String("error", msg))
}

// Notify posts a plain alert (budget blocks, auto-freeze) to every channel
// that takes alerts. Without one it only logs.
func (s *Service) Notify(ctx context.Context, text string) error {
	var errs []error
	sent := false
	for _, c := range s.channelList() {
		a, ok := c.(Alerter)
		if !ok {
			continue
		}
		sent = true
		cctx, cancel := context.WithTimeout(ctx, s.o.ChannelTimeout)
		if err := a.Alert(cctx, text); err != nil {
			errs = append(errs, fmt.Errorf("notify %s: %w", c.Name(), err))
		}
		cancel()
	}
	if !sent {
		s.log.InfoContext(ctx, "alert (no channel takes alerts)", slog.String("text", display.Text(text, 1000)))
	}
	return errors.Join(errs...)
}

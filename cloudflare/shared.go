package cloudflare

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// SharedLabel is the label of every shared session's token:
// "tollgate:[<owner>:]quote:shared:<random>".
const SharedLabel = "shared"

// SharedHooks are told about a shared session's token, so its mint and its
// revocation are each recorded once, however many calls used it.
type SharedHooks struct {
	// Minted runs after a token was minted and before any call uses it. An
	// error deletes the token and fails the call that needed it: no
	// credential is used without a record.
	Minted func(ctx context.Context, s *Session) error
	// Revoked runs after the token was deleted, or after deleting it failed
	// (err set; Sweep deletes it on the next start).
	Revoked func(ctx context.Context, s *Session, err error)
}

// SharedSession hands one read-only session to every caller: a single
// token per TTL window, minted on first use, replaced shortly before it
// expires and revoked once no call uses it any more (or when it expires
// unused, or on Close). Only read-only purposes may be shared: a mutating
// execution always gets a Session of its own.
type SharedSession struct {
	b       *Broker
	purpose Purpose
	hooks   SharedHooks
	// renewBefore is how long before its expiry a token stops being handed
	// out, so a call never starts on a token that may expire under it.
	renewBefore time.Duration

	mu     sync.Mutex
	cur    *Session
	users  map[*Session]int
	timer  *time.Timer
	closed bool
}

// Shared returns a SharedSession for the read-only purpose p (PurposeQuote
// or PurposeInspect). No token is minted until the first Use.
func (b *Broker) Shared(p Purpose, hooks SharedHooks) (*SharedSession, error) {
	if p != PurposeQuote && p != PurposeInspect {
		return nil, fmt.Errorf("shared cloudflare session: purpose %q can change something; only %s and %s tokens may be shared", p, PurposeQuote, PurposeInspect)
	}
	return &SharedSession{
		b: b, purpose: p, hooks: hooks, users: map[*Session]int{},
		renewBefore: max(b.cfg.TokenTTL/5, 30*time.Second),
	}, nil
}

// ErrSharedClosed is returned by Use after Close.
var ErrSharedClosed = errors.New("the shared cloudflare session is closed")

// Use runs fn with the shared session, minting a token first if there is
// none or the current one is about to expire.
func (ss *SharedSession) Use(ctx context.Context, fn func(*Session) error) error {
	s, err := ss.acquire(ctx)
	if err != nil {
		return err
	}
	defer ss.release(ctx, s)
	return fn(s)
}

func (ss *SharedSession) acquire(ctx context.Context) (*Session, error) {
	ss.mu.Lock()
	if ss.closed {
		ss.mu.Unlock()
		return nil, ErrSharedClosed
	}
	if ss.cur != nil && ss.b.cfg.Clock().Add(ss.renewBefore).Before(ss.cur.ExpiresAt) {
		ss.users[ss.cur]++
		s := ss.cur
		ss.mu.Unlock()
		return s, nil
	}
	retired := ss.retireLocked()
	// Minting under the lock: callers arriving meanwhile wait for this
	// token instead of minting their own.
	s, err := ss.b.Session(ctx, ss.purpose, SharedLabel)
	if err == nil && ss.hooks.Minted != nil {
		if herr := ss.hooks.Minted(ctx, s); herr != nil {
			ss.mu.Unlock()
			ss.revoke(ctx, s)
			ss.revoke(ctx, retired)
			return nil, fmt.Errorf("record the shared %s token: %w", ss.purpose, herr)
		}
	}
	if err == nil {
		ss.cur = s
		ss.users[s] = 1
		// Revoked when it stops being handed out, even if nobody calls again.
		idle := s.ExpiresAt.Sub(ss.b.cfg.Clock()) - ss.renewBefore
		ss.timer = time.AfterFunc(max(idle, 0), func() { ss.expire(context.WithoutCancel(ctx), s) })
	}
	ss.mu.Unlock()
	ss.revoke(ctx, retired)
	return s, err
}

// release ends one use of s; the last use of a retired session revokes it.
func (ss *SharedSession) release(ctx context.Context, s *Session) {
	ss.mu.Lock()
	ss.users[s]--
	var last *Session
	if ss.users[s] <= 0 && ss.cur != s {
		delete(ss.users, s)
		last = s
	}
	ss.mu.Unlock()
	ss.revoke(ctx, last)
}

// expire retires s when it reaches its renewal time unused.
func (ss *SharedSession) expire(ctx context.Context, s *Session) {
	ss.mu.Lock()
	var idle *Session
	if ss.cur == s {
		idle = ss.retireLocked()
	}
	ss.mu.Unlock()
	ss.revoke(ctx, idle)
}

// retireLocked stops handing out the current session and returns it when
// nobody uses it, for the caller to revoke once the lock is released; a
// session in use is revoked by its last release. Callers hold mu.
func (ss *SharedSession) retireLocked() *Session {
	s := ss.cur
	if s == nil {
		return nil
	}
	ss.cur = nil
	if ss.timer != nil {
		ss.timer.Stop()
		ss.timer = nil
	}
	if ss.users[s] > 0 {
		return nil
	}
	delete(ss.users, s)
	return s
}

// revoke deletes s's token (nothing for nil) and reports it.
func (ss *SharedSession) revoke(ctx context.Context, s *Session) {
	if s == nil {
		return
	}
	err := s.Close(ctx)
	if ss.hooks.Revoked != nil {
		ss.hooks.Revoked(ctx, s, err)
	}
}

// Close stops handing out the session and revokes its token: at once when
// no call uses it, else when the last one finishes.
func (ss *SharedSession) Close(ctx context.Context) {
	ss.mu.Lock()
	ss.closed = true
	idle := ss.retireLocked()
	ss.mu.Unlock()
	ss.revoke(ctx, idle)
}

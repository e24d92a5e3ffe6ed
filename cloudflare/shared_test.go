package cloudflare

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// tokenRequests counts the sandbox's token mints (POST tokens) and
// deletions (DELETE tokens/…) so far.
func tokenRequests(e *env) (mints, deletes int) {
	for _, r := range e.sb.Requests() {
		switch {
		case r.Method == "POST" && strings.HasSuffix(r.Path, "/tokens"):
			mints++
		case r.Method == "DELETE" && strings.Contains(r.Path, "/tokens/"):
			deletes++
		}
	}
	return mints, deletes
}

// hookLog records the shared session's hooks.
type hookLog struct {
	mu      sync.Mutex
	minted  []string
	revoked []string
	failErr error
}

func (h *hookLog) hooks() SharedHooks {
	return SharedHooks{
		Minted: func(_ context.Context, s *Session) error {
			h.mu.Lock()
			defer h.mu.Unlock()
			if h.failErr != nil {
				return h.failErr
			}
			h.minted = append(h.minted, s.TokenID)
			return nil
		},
		Revoked: func(_ context.Context, s *Session, err error) {
			h.mu.Lock()
			defer h.mu.Unlock()
			h.revoked = append(h.revoked, s.TokenID)
		},
	}
}

func (h *hookLog) counts() (int, int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.minted), len(h.revoked)
}

func quote(ctx context.Context, ss *SharedSession, name string) error {
	return ss.Use(ctx, func(s *Session) error {
		got, err := s.CheckDomains(ctx, name)
		if err == nil && !got[0].Registrable {
			err = errors.New("not registrable")
		}
		return err
	})
}

func TestSharedSessionOneTokenPerWindow(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	// The broker's clock moves with the sandbox's.
	cfg := e.cfg
	cfg.Clock = func() time.Time { return time.Now().Add(time.Duration(e.offset.Load())) }
	b, err := NewBroker(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.b = b
	var h hookLog
	ss, err := e.b.Shared(PurposeQuote, h.hooks())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	m0, d0 := tokenRequests(e)

	// 100 quotes from 10 goroutines at once: one token for all of them.
	var wg sync.WaitGroup
	var failed atomic.Int64
	for g := range 10 {
		wg.Go(func() {
			for i := range 10 {
				if err := quote(ctx, ss, "shared-"+string(rune('a'+g))+string(rune('a'+i))+".com"); err != nil {
					failed.Add(1)
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	mints, deletes := tokenRequests(e)
	if mints-m0 != 1 || deletes-d0 != 0 {
		t.Fatalf("100 quotes: %d mints and %d deletions, want 1 and 0", mints-m0, deletes-d0)
	}
	if m, r := h.counts(); m != 1 || r != 0 {
		t.Fatalf("hooks: %d minted, %d revoked; want one mint recorded", m, r)
	}

	// Near its expiry the token is replaced; the old one is revoked once
	// nobody uses it.
	e.offset.Add(int64(e.b.cfg.TokenTTL - ss.renewBefore + time.Second))
	if err := quote(ctx, ss, "later.com"); err != nil {
		t.Fatal(err)
	}
	mints, deletes = tokenRequests(e)
	if mints-m0 != 2 || deletes-d0 != 1 {
		t.Fatalf("after the window: %d mints and %d deletions, want 2 and 1", mints-m0, deletes-d0)
	}

	// Shutdown revokes the current token; nothing is handed out after.
	ss.Close(ctx)
	mints, deletes = tokenRequests(e)
	if mints-m0 != 2 || deletes-d0 != 2 {
		t.Fatalf("after Close: %d mints and %d deletions, want 2 and 2", mints-m0, deletes-d0)
	}
	if m, r := h.counts(); m != 2 || r != 2 {
		t.Fatalf("hooks: %d minted, %d revoked; want 2 and 2", m, r)
	}
	if err := quote(ctx, ss, "closed.com"); !errors.Is(err, ErrSharedClosed) {
		t.Fatalf("Use after Close = %v, want ErrSharedClosed", err)
	}
	if e.b.Alive() != 0 {
		t.Errorf("%d tokens alive after Close", e.b.Alive())
	}
}

func TestSharedSessionRevokesAnIdleTokenAtItsRenewalTime(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var h hookLog
	ss, err := e.b.Shared(PurposeQuote, h.hooks())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := quote(ctx, ss, "idle.com"); err != nil {
		t.Fatal(err)
	}
	ss.mu.Lock()
	cur := ss.cur
	ss.mu.Unlock()
	ss.expire(ctx, cur) // what the timer does when the renewal time comes
	if _, r := h.counts(); r != 1 || e.liveToken(cur.TokenID) {
		t.Fatalf("an idle token at its renewal time: revoked=%d, still live=%v", r, e.liveToken(cur.TokenID))
	}
	ss.Close(ctx)
}

func TestSharedSessionKeepsATokenInUse(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ss, err := e.b.Shared(PurposeQuote, SharedHooks{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	inUse := make(chan *Session)
	done := make(chan struct{})
	go func() {
		_ = ss.Use(ctx, func(s *Session) error {
			inUse <- s
			<-done
			_, err := s.CheckDomains(ctx, "still-valid.com")
			if err != nil {
				t.Errorf("a call that started on the old token failed: %v", err)
			}
			return err
		})
	}()
	old := <-inUse
	ss.Close(ctx) // shutdown while a quote is under way
	if !e.liveToken(old.TokenID) {
		t.Fatal("Close revoked a token a call was still using")
	}
	close(done)
	deadline := time.Now().Add(2 * time.Minute) // a hang guard only
	for e.liveToken(old.TokenID) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if e.liveToken(old.TokenID) {
		t.Fatal("the token was not revoked when its last call finished")
	}
}

func TestSharedSessionFailsClosed(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	if _, err := e.b.Shared(PurposeRegister, SharedHooks{}); err == nil {
		t.Fatal("a register token may be shared")
	}
	h := hookLog{failErr: errors.New("audit down")}
	ss, err := e.b.Shared(PurposeQuote, h.hooks())
	if err != nil {
		t.Fatal(err)
	}
	ran := false
	err = ss.Use(context.Background(), func(*Session) error { ran = true; return nil })
	if err == nil || ran || !strings.Contains(err.Error(), "audit down") {
		t.Fatalf("Use with a failing mint record: err=%v ran=%v, want the audit error and no call", err, ran)
	}
	if e.b.Alive() != 0 {
		t.Fatal("a token whose mint could not be recorded was kept")
	}
}

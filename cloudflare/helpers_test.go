package cloudflare

import (
	"bytes"
	"context"
	"log/slog"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgatehq/tollgate/cloudflare/sandbox"
)

// lockedBuffer is a log sink safe for concurrent handlers.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// env is a sandbox served over real loopback HTTP plus a Broker pointed at it.
type env struct {
	sb     *sandbox.Sandbox
	srv    *httptest.Server
	b      *Broker
	cfg    Config
	logs   *lockedBuffer
	offset atomic.Int64 // sandbox clock skew, to expire tokens without sleeping

	mu      sync.Mutex
	records []RequestRecord
	failObs atomic.Bool
}

type envOption func(*Config)

func newEnv(t testing.TB, opts ...envOption) *env {
	t.Helper()
	e := &env{logs: &lockedBuffer{}}
	sb, err := sandbox.New(sandbox.Options{
		Clock: func() time.Time { return time.Now().Add(time.Duration(e.offset.Load())) },
		Seed:  7,
	})
	if err != nil {
		t.Fatalf("sandbox.New: %v", err)
	}
	e.sb = sb
	e.srv = httptest.NewServer(sb)
	t.Cleanup(func() {
		sb.Close()
		e.srv.Close()
	})
	e.cfg = Config{
		APIBase:      e.srv.URL + sandbox.APIPrefix,
		AccountID:    sb.AccountID(),
		ParentToken:  sb.ParentToken(),
		HTTPClient:   e.srv.Client(),
		Logger:       slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		RetryBackoff: time.Millisecond,
		MaxRetryWait: 5 * time.Millisecond,
		PollInterval: time.Millisecond,
		Observer: func(_ context.Context, r RequestRecord) error {
			e.mu.Lock()
			e.records = append(e.records, r)
			e.mu.Unlock()
			if e.failObs.Load() {
				return errAuditDown
			}
			return nil
		},
	}
	for _, o := range opts {
		o(&e.cfg)
	}
	b, err := NewBroker(e.cfg)
	if err != nil {
		t.Fatalf("NewBroker: %v", err)
	}
	e.b = b
	return e
}

type auditError struct{}

func (auditError) Error() string { return "audit store unavailable" }

var errAuditDown error = auditError{}

func (e *env) session(t testing.TB, p Purpose, label string) *Session {
	t.Helper()
	s, err := e.b.Session(context.Background(), p, label)
	if err != nil {
		t.Fatalf("Session(%s): %v", p, err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	return s
}

func (e *env) recorded() []RequestRecord {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]RequestRecord(nil), e.records...)
}

// liveToken reports whether the sandbox still holds a token with that id.
func (e *env) liveToken(id string) bool {
	for _, t := range e.sb.LiveTokens() {
		if t.ID == id {
			return true
		}
	}
	return false
}

func ctxTimeout(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

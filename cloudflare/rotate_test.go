package cloudflare

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgatehq/tollgate/cloudflare/sandbox"
)

// tokenFileEnv is an env whose broker reads the parent token from a file
// and records every rotation.
type tokenFileEnv struct {
	*env
	path      string
	rotations func() []Rotation
}

func newTokenFileEnv(t testing.TB, opts ...envOption) *tokenFileEnv {
	t.Helper()
	path := filepath.Join(t.TempDir(), "cloudflare-token")
	var mu sync.Mutex
	var recs []Rotation
	var e *env
	opts = append([]envOption{func(c *Config) {
		if err := os.WriteFile(path, []byte(c.ParentToken+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		c.ParentToken, c.ParentSource = "", TokenFile(path)
		c.OnRotation = func(_ context.Context, r Rotation) error {
			mu.Lock()
			defer mu.Unlock()
			recs = append(recs, r)
			return nil
		}
	}}, opts...)
	e = newEnv(t, opts...)
	return &tokenFileEnv{env: e, path: path, rotations: func() []Rotation {
		mu.Lock()
		defer mu.Unlock()
		return append([]Rotation(nil), recs...)
	}}
}

func readToken(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func (e *env) status(path string, status int) int {
	n := 0
	for _, r := range e.sb.Requests() {
		if strings.HasSuffix(r.Path, path) && r.Status == status {
			n++
		}
	}
	return n
}

func TestRotateTokenFile(t *testing.T) {
	t.Parallel()
	e := newTokenFileEnv(t)
	ctx := context.Background()
	old := readToken(t, e.path)
	e.session(t, PurposeQuote, "before")

	rec, err := e.b.Rotate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rolled := readToken(t, e.path)
	if rolled == old || rolled != e.sb.ParentToken() {
		t.Fatal("the token file does not hold the rolled value the sandbox now has")
	}
	if fi, _ := os.Stat(e.path); fi.Mode().Perm() != 0o600 {
		t.Errorf("token file mode %v, want 0600", fi.Mode().Perm())
	}
	if rec.TokenID == "" || rec.Source != "file "+e.path || rec.Scheduled || rec.Err != "" || rec.At.IsZero() {
		t.Fatalf("rotation record %+v", rec)
	}
	if got := e.rotations(); len(got) != 1 || got[0] != rec {
		t.Fatalf("OnRotation saw %+v", got)
	}
	if _, err := e.b.verifyWith(ctx, old, "test"); err == nil {
		t.Fatal("the old value still works after the roll")
	}
	s := e.session(t, PurposeQuote, "after")
	if _, err := s.CheckDomains(ctx, "rotated.com"); err != nil {
		t.Fatal(err)
	}
	if err := e.b.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{old, rolled} {
		if strings.Contains(e.logs.String(), secret) {
			t.Fatal("a parent token value is in the logs")
		}
		for _, r := range e.recorded() {
			if strings.Contains(r.Path+r.Err, secret) {
				t.Fatal("a parent token value is in a request record")
			}
		}
	}
	entries, _ := os.ReadDir(filepath.Dir(e.path))
	for _, en := range entries {
		if strings.Contains(en.Name(), ".tmp-") || strings.Contains(en.Name(), ".check-") {
			t.Errorf("left behind %s", en.Name())
		}
	}
}

func TestRotateRefusedWhenSourceReadOnly(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *Config) {
		c.ParentSource, c.ParentToken = StaticParent(c.ParentToken, "the environment variable CLOUDFLARE_API_TOKEN"), ""
	})
	before := len(e.sb.Requests())
	_, err := e.b.Rotate(context.Background())
	if !errors.Is(err, ErrParentReadOnly) || !strings.Contains(err.Error(), "CLOUDFLARE_API_TOKEN") {
		t.Fatalf("Rotate = %v", err)
	}
	if n := len(e.sb.Requests()); n != before {
		t.Fatalf("a refused rotation made %d requests", n-before)
	}
	// A token file whose directory is gone is refused before the roll too.
	f := newTokenFileEnv(t)
	if err := os.RemoveAll(filepath.Dir(f.path)); err != nil {
		t.Fatal(err)
	}
	if _, err := f.b.Rotate(context.Background()); !errors.Is(err, ErrParentReadOnly) {
		t.Fatalf("Rotate with the file's directory gone = %v", err)
	}
	if f.status("/value", 200) != 0 {
		t.Fatal("rolled a token that could not be stored")
	}
}

// TestRotationRacesMints: goroutines mint and close sessions while the
// parent token is rotated again and again; no mint fails and none is sent
// with a value already rolled (no 401 anywhere), and no value is logged.
func TestRotationRacesMints(t *testing.T) {
	t.Parallel()
	e := newTokenFileEnv(t)
	ctx := context.Background()
	values := []string{readToken(t, e.path)}
	var stop atomic.Bool
	var mints atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				s, err := e.b.Session(ctx, PurposeQuote, "race")
				if err != nil {
					errs <- err
					return
				}
				mints.Add(1)
				if err := s.Close(ctx); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	const rotations = 6
	for range rotations {
		// Let some mints through between rotations.
		for target := mints.Load() + 8; mints.Load() < target; {
			time.Sleep(time.Millisecond)
		}
		if _, err := e.b.Rotate(ctx); err != nil {
			t.Fatal(err)
		}
		values = append(values, readToken(t, e.path))
	}
	stop.Store(true)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("mint or close failed during rotations: %v", err)
	}
	if n := len(e.rotations()); n != rotations {
		t.Fatalf("%d rotations recorded, want %d", n, rotations)
	}
	for _, r := range e.sb.Requests() {
		if r.Status == http.StatusUnauthorized {
			t.Fatalf("%s %s was refused 401: sent with a rolled value", r.Method, r.Path)
		}
	}
	if e.b.Alive() != 0 {
		t.Fatalf("%d tokens left alive", e.b.Alive())
	}
	logs := e.logs.String()
	for _, v := range values {
		if strings.Contains(logs, v) {
			t.Fatal("a parent token value is in the logs")
		}
	}
	t.Logf("%d mints across %d rotations", mints.Load(), rotations)
}

// TestSharedTokenFileReRead: two brokers (two processes) share a token
// file; when one rotates, the other's next request is refused once, it
// re-reads the file and goes on.
func TestSharedTokenFileReRead(t *testing.T) {
	t.Parallel()
	e := newTokenFileEnv(t)
	ctx := context.Background()
	cfg := e.cfg
	cfg.ParentToken, cfg.ParentSource = "", TokenFile(e.path)
	other, err := NewBroker(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.b.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	s, err := other.Session(ctx, PurposeQuote, "other")
	if err != nil {
		t.Fatalf("the other broker could not mint after the rotation: %v", err)
	}
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if n := e.status("/tokens", http.StatusUnauthorized) + e.status("/permission_groups", http.StatusUnauthorized); n != 1 {
		t.Fatalf("%d requests refused, want the one that found the value stale", n)
	}
	// A value that is simply wrong is not retried forever: one refusal, one
	// re-read of an unchanged file, then the error.
	if err := os.WriteFile(e.path, []byte(strings.Repeat("x", 40)), 0o600); err != nil {
		t.Fatal(err)
	}
	bogus, err := NewBroker(cfg)
	if err != nil {
		t.Fatal(err)
	}
	refused := e.status("/verify", http.StatusUnauthorized)
	if err := bogus.Ping(ctx); err == nil {
		t.Fatal("Ping succeeded with a bogus token")
	}
	if n := e.status("/verify", http.StatusUnauthorized) - refused; n != 1 {
		t.Fatalf("a bogus token was tried %d times, want once", n)
	}
}

func TestRotateIfDue(t *testing.T) {
	t.Parallel()
	var offset atomic.Int64
	e := newTokenFileEnv(t, func(c *Config) {
		c.Clock = func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	})
	ctx := context.Background()
	before := len(e.sb.Requests())
	if _, did, err := e.b.RotateIfDue(ctx, DefaultRotateEvery); err != nil || did {
		t.Fatalf("a fresh token rotated: %v %v", did, err)
	}
	for _, r := range e.sb.Requests()[before:] {
		if r.Method == "PUT" {
			t.Fatal("a rotation that was not due rolled the token")
		}
	}
	if len(e.rotations()) != 0 {
		t.Fatal("a rotation that was not due was recorded")
	}
	offset.Store(int64(DefaultRotateEvery + time.Hour))
	rec, did, err := e.b.RotateIfDue(ctx, DefaultRotateEvery)
	if err != nil || !did || !rec.Scheduled {
		t.Fatalf("a 30-day-old token: %+v %v %v", rec, did, err)
	}
	// Back to real time, just after the rotation: not due again.
	offset.Store(0)
	if _, did, err := e.b.RotateIfDue(ctx, DefaultRotateEvery); err != nil || did {
		t.Fatalf("rotated twice in a row: %v %v", did, err)
	}
}

// TestRotateLostAnswer: a roll whose answer is lost leaves the old value
// dead and says so; a roll refused before it acted leaves the old one
// working.
func TestRotateLostAnswer(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		after bool
		want  string
	}{
		{"answer lost after the roll", true, "the old value no longer works"},
		{"refused before the roll", false, "the current value still works"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newTokenFileEnv(t)
			old := readToken(t, e.path)
			e.sb.SetFaults(sandbox.Faults{ErrorRate: 1, FailAfterEffect: tc.after, PathContains: "/value", Method: "PUT"})
			_, err := e.b.Rotate(context.Background())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Rotate = %v, want %q", err, tc.want)
			}
			if got := e.rotations(); len(got) != 1 || got[0].Err == "" {
				t.Fatalf("the failed rotation was not recorded: %+v", got)
			}
			if readToken(t, e.path) != old {
				t.Fatal("the file changed without a known new value")
			}
			e.sb.SetFaults(sandbox.Faults{})
			if _, err := e.b.verifyWith(context.Background(), old, "test"); (err == nil) == tc.after {
				t.Fatalf("old value works = %v after %s", err == nil, tc.name)
			}
		})
	}
}

func TestParentStatus(t *testing.T) {
	t.Parallel()
	e := newTokenFileEnv(t)
	st, err := e.b.ParentStatus(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.Source != "file "+e.path || st.NotWritable != "" || st.TokenID == "" || st.Status != "active" || st.IssuedOn.IsZero() ||
		st.LastRolled.Before(st.IssuedOn) || !st.ExpiresOn.IsZero() {
		t.Fatalf("status %+v", st)
	}
	if len(st.Policies) != 1 || strings.Join(st.Policies[0].Groups, ",") != GroupTokensRead+","+GroupTokensWrite ||
		st.Policies[0].Resources[0] != "com.cloudflare.api.account."+e.sb.AccountID() || st.Policies[0].Effect != "allow" {
		t.Fatalf("policies %+v", st.Policies)
	}
	env := newEnv(t, func(c *Config) {
		c.ParentSource, c.ParentToken = StaticParent(c.ParentToken, "the environment variable CLOUDFLARE_API_TOKEN"), ""
	})
	st, err = env.b.ParentStatus(context.Background())
	if err != nil || !strings.Contains(st.NotWritable, "cannot rewrite") {
		t.Fatalf("env status %+v, %v", st, err)
	}
}

func TestTokenFileRead(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, tc := range []struct{ name, content, want string }{
		{"empty", "\n", "empty"},
		{"two values", "abc def\n", "whitespace"},
		{"missing", "", "no such file"},
	} {
		path := filepath.Join(dir, tc.name)
		if tc.content != "" {
			if err := os.WriteFile(path, []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		_, err := TokenFile(path).Read()
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "abc") {
			t.Errorf("%s: %v, want an error naming %q and not the content", tc.name, err, tc.want)
		}
		if _, err := NewBroker(Config{AccountID: strings.Repeat("a", 32), ParentSource: TokenFile(path)}); err == nil {
			t.Errorf("%s: NewBroker accepted the file", tc.name)
		}
	}
	if _, err := NewBroker(Config{AccountID: strings.Repeat("a", 32), ParentToken: "x", ParentSource: TokenFile("y")}); err == nil || !strings.Contains(err.Error(), "not both") {
		t.Fatalf("ParentToken and ParentSource together: %v", err)
	}
}

func TestRunRotation(t *testing.T) {
	t.Parallel()
	e := newTokenFileEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		e.b.RunRotation(ctx, time.Nanosecond, time.Millisecond)
	}()
	deadline := time.Now().Add(30 * time.Second)
	for len(e.rotations()) < 2 {
		if time.Now().After(deadline) {
			t.Fatal("RunRotation did not rotate twice")
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	<-done
	for _, r := range e.rotations()[:2] { // a later one may meet the cancellation
		if !r.Scheduled || r.Err != "" {
			t.Fatalf("scheduled rotation %+v", r)
		}
	}
	// A source that cannot be written ends the loop at once.
	ro := newEnv(t, func(c *Config) { c.ParentSource, c.ParentToken = StaticParent(c.ParentToken, "env"), "" })
	ro.b.RunRotation(context.Background(), time.Nanosecond, time.Millisecond)
	if !strings.Contains(ro.logs.String(), "will not be rotated on schedule") {
		t.Fatal("a read-only source was not reported")
	}
}

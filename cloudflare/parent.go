package cloudflare

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// ErrParentReadOnly: the parent token's source cannot store a rolled value
// (an environment variable), so it is not rotated.
var ErrParentReadOnly = errors.New("cloudflare: the parent token's source cannot be rewritten")

// ParentSource is where the parent token comes from and where a rolled one
// goes. Implementations never log or return the value except from Read.
type ParentSource interface {
	// Read returns the token as the source holds it now.
	Read() (string, error)
	// Writable is nil when Write can store a rolled token, else why not.
	// It is checked before a roll, so a token is never rolled that could
	// not be stored.
	Writable() error
	// Write stores a rolled token in place of the old one, atomically.
	Write(token string) error
	// String names the source (never the value) for messages and the audit
	// trail, e.g. "file /etc/tollgate/cloudflare-token".
	String() string
}

// sourceLocker is a ParentSource that several processes share: Lock keeps
// two of them from rotating at once.
type sourceLocker interface {
	Lock() (unlock func(), err error)
}

// sourceModTimer is a ParentSource that knows when its value last changed.
type sourceModTimer interface {
	Modified() (time.Time, error)
}

// StaticParent is a parent token that cannot be rewritten, such as one from
// an environment variable; name says where it came from ("the environment
// variable CLOUDFLARE_API_TOKEN").
func StaticParent(token, name string) ParentSource { return staticParent{token: token, name: name} }

type staticParent struct{ token, name string }

func (p staticParent) Read() (string, error) { return p.token, nil }
func (p staticParent) Writable() error {
	return fmt.Errorf("%w: it comes from %s, which tollgate cannot rewrite", ErrParentReadOnly, p.name)
}
func (p staticParent) Write(string) error { return p.Writable() }
func (p staticParent) String() string     { return p.name }

// TokenFile is a parent token kept in a file: read at start and whenever
// the token stops working (another process sharing the file rotated it),
// rewritten atomically with mode 0600 by a rotation. Surrounding whitespace
// (a trailing newline) is ignored.
func TokenFile(path string) ParentSource { return tokenFile{path: path} }

type tokenFile struct{ path string }

func (f tokenFile) String() string { return "file " + f.path }

func (f tokenFile) Read() (string, error) {
	b, err := os.ReadFile(f.path)
	if err != nil {
		return "", fmt.Errorf("read the parent token from %s: %w", f, err)
	}
	tok := strings.TrimSpace(string(b))
	if err := checkToken(tok); err != nil {
		return "", fmt.Errorf("read the parent token from %s: %w", f, err)
	}
	return tok, nil
}

// Writable creates and removes a file where Write puts its temp file, so
// a directory tollgate cannot write is found before the token is rolled.
func (f tokenFile) Writable() error {
	tmp, err := os.CreateTemp(filepath.Dir(f.path), "."+filepath.Base(f.path)+".check-*")
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrParentReadOnly, f, err)
	}
	name := tmp.Name()
	_ = tmp.Close()
	return os.Remove(name)
}

func (f tokenFile) Write(token string) (err error) {
	if err := checkToken(token); err != nil {
		return err
	}
	dir := filepath.Dir(f.path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(f.path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write the parent token to %s: %w", f, err)
	}
	defer func() {
		if err != nil {
			_ = os.Remove(tmp.Name())
		}
	}()
	fail := func(err error) error {
		_ = tmp.Close()
		return fmt.Errorf("write the parent token to %s: %w", f, err)
	}
	if err = tmp.Chmod(0o600); err != nil {
		return fail(err)
	}
	if _, err = tmp.WriteString(token + "\n"); err != nil {
		return fail(err)
	}
	if err = tmp.Sync(); err != nil {
		return fail(err)
	}
	if err = tmp.Close(); err != nil {
		return fmt.Errorf("write the parent token to %s: %w", f, err)
	}
	if err = os.Rename(tmp.Name(), f.path); err != nil {
		return fmt.Errorf("write the parent token to %s: %w", f, err)
	}
	if d, derr := os.Open(dir); derr == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}

func (f tokenFile) Modified() (time.Time, error) {
	fi, err := os.Stat(f.path)
	if err != nil {
		return time.Time{}, err
	}
	return fi.ModTime(), nil
}

func (f tokenFile) Lock() (func(), error) { return lockFile(f.path + ".lock") }

// checkToken rejects values that cannot be a token, without echoing them.
func checkToken(tok string) error {
	switch {
	case tok == "":
		return errors.New("the parent token is empty")
	case strings.ContainsAny(tok, " \t\r\n"):
		return errors.New("the parent token contains whitespace; the file must hold the token value alone")
	}
	return nil
}

// withParent runs fn with the parent token's current value, holding the
// rotation lock for reading so a rotation never swaps the value while a
// request (a token mint among them) is using it. If Cloudflare answers 401
// (the value was rolled by another process sharing the source), the source
// is read once more and fn retried if the value changed.
func (b *Broker) withParent(ctx context.Context, fn func(token string) error) error {
	b.parentMu.RLock()
	tok := b.parent
	err := fn(tok)
	b.parentMu.RUnlock()
	if !unauthenticated(err) || !b.reloadParent(ctx, tok) {
		return err
	}
	b.parentMu.RLock()
	defer b.parentMu.RUnlock()
	return fn(b.parent)
}

// reloadParent re-reads the source after old was refused; it reports
// whether the value in use is now a different one.
func (b *Broker) reloadParent(ctx context.Context, old string) bool {
	b.parentMu.Lock()
	defer b.parentMu.Unlock()
	if b.parent != old {
		return true // another goroutine already re-read it
	}
	v, err := b.source.Read()
	if err != nil {
		b.log.LogAttrs(ctx, slog.LevelWarn, "the cloudflare parent token was refused and re-reading it failed",
			slog.String(logSource, b.source.String()), slog.String(logErr, err.Error()))
		return false
	}
	if v == old {
		return false
	}
	b.parent = v
	b.log.LogAttrs(ctx, slog.LevelInfo, "the cloudflare parent token was refused; using the value now in its source (rotated elsewhere)",
		slog.String(logSource, b.source.String()))
	return true
}

// unauthenticated reports a 401: the token is unknown, deleted or expired.
func unauthenticated(err error) bool {
	var ae *APIError
	return errors.As(err, &ae) && ae.Status == http.StatusUnauthorized
}

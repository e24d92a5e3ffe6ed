package web

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/tollgatehq/tollgate/approvals"
	"github.com/tollgatehq/tollgate/ledger/store"
)

// Defaults of Config.
const (
	DefaultLinkTTL    = 10 * time.Minute
	DefaultSessionTTL = 8 * time.Hour
)

// Audit events of the console.
const (
	EventLinkCreated   = "console.link_created"
	EventSignedIn      = "console.signed_in"
	EventSignInRefused = "console.signin_refused"
	EventSignedOut     = "console.signed_out"
)

// cookieName is the session cookie. It is HttpOnly, SameSite=Strict, limited
// to /console/, and Secure under TLS.
const cookieName = "tollgate_console"

// Errors of MintLink and Redeem.
var (
	ErrLinkUsed    = errors.New("this sign-in link was already used")
	ErrLinkExpired = errors.New("this sign-in link has expired")
	ErrLinkUnknown = errors.New("this is not a tollgate sign-in link")
)

// secret returns 32 random bytes, base64url: a link's or a session's secret.
func secret() string {
	var b [32]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// hashOf is what the database keeps of a secret.
func hashOf(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(h[:])
}

var secretPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{43}$`)

// consolePath accepts only a plain path inside the console: where a link may
// land. Anything else (another host, a scheme, dot segments, a query) lands
// on the inbox, so a link can never redirect out of the console.
func consolePath(p string) string {
	const inbox = "/console/"
	if !strings.HasPrefix(p, inbox) || strings.ContainsAny(p, "?#\\%") || strings.Contains(p, "//") || strings.Contains(p, "/.") || strings.Contains(p, "..") {
		return inbox
	}
	for _, r := range p {
		if r <= ' ' || r > '~' {
			return inbox
		}
	}
	return p
}

// Link is a minted sign-in link.
type Link struct {
	URL       string // base URL + /console/signin?t=SECRET; hand it to the approver only
	Approver  string
	ExpiresAt time.Time
}

// MintLink creates a single-use sign-in link for a configured approver,
// landing on next (a console path; the inbox when empty), valid for ttl (the
// default when 0). Only the hash of its secret is stored, so any process on
// the database may mint one and the serving one redeem it. by names who asked
// (cli:OSUSER, slack:UXXXX) for the audit trail. base is the console's
// address (PublishedBase, or the configured public URL).
func MintLink(ctx context.Context, svc *approvals.Service, base, approver, next, by string, ttl time.Duration) (Link, error) {
	ap, ok := approverNamed(svc, approver)
	if !ok {
		return Link{}, fmt.Errorf("%w: %q", approvals.ErrNotApprover, approver)
	}
	u, err := checkBase(base)
	if err != nil {
		return Link{}, err
	}
	if ttl <= 0 {
		ttl = DefaultLinkTTL
	}
	if next == "" {
		next = "/console/"
	}
	next = consolePath(next)
	s := secret()
	now := svc.Now()
	exp := now.Add(ttl)
	err = svc.Store().Write(ctx, func(tx *store.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO approval_console_links (token_hash, approver, next_path, created_by, created_at, expires_at)
			VALUES (?, ?, ?, ?, ?, ?)`, hashOf(s), ap.Name, next, by, now.UnixNano(), exp.UnixNano()); err != nil {
			return fmt.Errorf("store sign-in link: %w", err)
		}
		return nil
	})
	if err != nil {
		return Link{}, err
	}
	if err := svc.Record(ctx, EventLinkCreated, by, "", map[string]any{
		"approver": ap.Name, "expires_at": exp.Format(time.RFC3339), "lands_on": next, "link": hashOf(s)[:12],
	}); err != nil {
		return Link{}, fmt.Errorf("audit sign-in link: %w", err)
	}
	u.Path = strings.TrimSuffix(u.Path, "/") + "/console/signin"
	u.RawQuery = url.Values{"t": {s}}.Encode()
	return Link{URL: u.String(), Approver: ap.Name, ExpiresAt: exp}, nil
}

func approverNamed(svc *approvals.Service, name string) (approvals.Approver, bool) {
	for _, a := range svc.Approvers() {
		if strings.EqualFold(a.Name, name) {
			return a, true
		}
	}
	return approvals.Approver{}, false
}

// checkBase parses the console's base URL: absolute http or https, no query.
func checkBase(base string) (*url.URL, error) {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return nil, fmt.Errorf("console address %q: want an absolute http(s) URL such as https://tollgate.example.com, without query or credentials", base)
	}
	return u, nil
}

// CheckBaseURL reports whether base can be the console's public address.
func CheckBaseURL(base string) error {
	_, err := checkBase(base)
	return err
}

// PublishBase records the console's address for CLI processes on the same
// database (tollgate approvals open), or withdraws it when base is "". The
// server calls it at start.
func PublishBase(ctx context.Context, st *store.Store, base string, now time.Time) error {
	if base == "" {
		// No listener (stdio): links would point at nothing.
		if _, err := st.ExecContext(ctx, `DELETE FROM approval_console_endpoint`); err != nil {
			return fmt.Errorf("withdraw console address: %w", err)
		}
		return nil
	}
	if _, err := checkBase(base); err != nil {
		return err
	}
	_, err := st.ExecContext(ctx, `INSERT INTO approval_console_endpoint (id, base_url, published_at) VALUES (1, ?, ?)
		ON CONFLICT (id) DO UPDATE SET base_url = excluded.base_url, published_at = excluded.published_at`, base, now.UnixNano())
	if err != nil {
		return fmt.Errorf("publish console address: %w", err)
	}
	return nil
}

// PublishedBase returns the address the serving tollgate published ("" when
// no server has run on this database).
func PublishedBase(ctx context.Context, st *store.Store) (string, error) {
	var base string
	err := st.QueryRowContext(ctx, `SELECT base_url FROM approval_console_endpoint WHERE id = 1`).Scan(&base)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read console address: %w", err)
	}
	return base, nil
}

// pendingLink is a link looked at without being used (the sign-in page).
type pendingLink struct {
	approver  string
	next      string
	expiresAt time.Time
}

// lookLink reads a link without using it.
func (c *Console) lookLink(ctx context.Context, secret string) (pendingLink, error) {
	if !secretPattern.MatchString(secret) {
		return pendingLink{}, ErrLinkUnknown
	}
	var (
		l    pendingLink
		exp  int64
		used sql.NullInt64
	)
	err := c.st.QueryRowContext(ctx, `SELECT approver, next_path, expires_at, used_at FROM approval_console_links WHERE token_hash = ?`, hashOf(secret)).
		Scan(&l.approver, &l.next, &exp, &used)
	if errors.Is(err, sql.ErrNoRows) {
		return pendingLink{}, ErrLinkUnknown
	}
	if err != nil {
		return pendingLink{}, fmt.Errorf("read sign-in link: %w", err)
	}
	l.expiresAt = time.Unix(0, exp).UTC()
	switch {
	case used.Valid:
		return l, ErrLinkUsed
	case !c.now().Before(l.expiresAt):
		return l, ErrLinkExpired
	}
	return l, nil
}

// session is a signed-in browser.
type session struct {
	secret    string // the cookie's value; the CSRF token is derived from it
	approver  string
	expiresAt time.Time
}

// redeem uses a link once and opens a session for its approver, in one
// transaction: two browsers racing with the same link get one session.
func (c *Console) redeem(ctx context.Context, linkSecret string) (session, string, error) {
	l, err := c.lookLink(ctx, linkSecret)
	if err != nil {
		return session{}, "", err
	}
	if _, ok := approverNamed(c.svc, l.approver); !ok {
		return session{}, "", fmt.Errorf("%w: %s is no longer an approver", approvals.ErrNotApprover, l.approver)
	}
	s := session{secret: secret(), approver: l.approver, expiresAt: c.now().Add(c.sessionTTL)}
	err = c.st.Write(ctx, func(tx *store.Tx) error {
		now := c.now().UnixNano()
		res, err := tx.ExecContext(ctx, `UPDATE approval_console_links SET used_at = ? WHERE token_hash = ? AND used_at IS NULL AND expires_at > ?`,
			now, hashOf(linkSecret), now)
		if err != nil {
			return fmt.Errorf("use sign-in link: %w", err)
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return ErrLinkUsed
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO approval_console_sessions (token_hash, approver, link_hash, created_at, expires_at) VALUES (?, ?, ?, ?, ?)`,
			hashOf(s.secret), s.approver, hashOf(linkSecret), now, s.expiresAt.UnixNano()); err != nil {
			return fmt.Errorf("open session: %w", err)
		}
		return nil
	})
	if err != nil {
		return session{}, "", err
	}
	return s, l.next, nil
}

// sessionOf returns the request's session: a cookie whose hash names a session
// that is neither ended nor expired, of a person who is still an approver.
func (c *Console) sessionOf(r *http.Request) (session, bool) {
	ck, err := r.Cookie(cookieName)
	if err != nil || !secretPattern.MatchString(ck.Value) {
		return session{}, false
	}
	var (
		s     = session{secret: ck.Value}
		exp   int64
		ended sql.NullInt64
	)
	err = c.st.QueryRowContext(r.Context(), `SELECT approver, expires_at, ended_at FROM approval_console_sessions WHERE token_hash = ?`, hashOf(ck.Value)).
		Scan(&s.approver, &exp, &ended)
	if err != nil {
		if !errors.Is(err, sql.ErrNoRows) {
			c.log.ErrorContext(r.Context(), "read console session", "error", err.Error())
		}
		return session{}, false
	}
	s.expiresAt = time.Unix(0, exp).UTC()
	if ended.Valid || !c.now().Before(s.expiresAt) {
		return session{}, false
	}
	if _, ok := approverNamed(c.svc, s.approver); !ok {
		return session{}, false
	}
	return s, true
}

// endSession signs a browser out.
func (c *Console) endSession(ctx context.Context, s session) error {
	_, err := c.st.ExecContext(ctx, `UPDATE approval_console_sessions SET ended_at = ? WHERE token_hash = ? AND ended_at IS NULL`,
		c.now().UnixNano(), hashOf(s.secret))
	if err != nil {
		return fmt.Errorf("sign out: %w", err)
	}
	return nil
}

// csrfToken is the session's form token: an HMAC of a fixed label under the
// session's own secret, so it needs no storage, differs per session and
// cannot be computed without the HttpOnly cookie.
func csrfToken(s session) string {
	m := hmac.New(sha256.New, []byte(s.secret))
	m.Write([]byte("tollgate console csrf v1"))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// checkCSRF compares the form's token with the session's in constant time.
func checkCSRF(s session, got string) bool {
	return hmac.Equal([]byte(got), []byte(csrfToken(s)))
}

// sameOrigin requires a POST to come from a page of this console: its Origin
// (or, without one, its Referer) must name this request's own host, or the
// host of the configured public URL (a proxy in front may rewrite Host). The
// server's Host check has already refused hosts that are not tollgate's.
func (c *Console) sameOrigin(r *http.Request) bool {
	src := r.Header.Get("Origin")
	if src == "" || src == "null" {
		src = r.Header.Get("Referer")
	}
	if src == "" {
		return false
	}
	u, err := url.Parse(src)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") {
		return false
	}
	if strings.EqualFold(u.Host, r.Host) {
		return true
	}
	pub, err := url.Parse(c.base)
	return err == nil && pub.Host != "" && strings.EqualFold(u.Host, pub.Host)
}

// setCookie sets or clears the session cookie.
func (c *Console) setCookie(w http.ResponseWriter, r *http.Request, s *session) {
	ck := &http.Cookie{
		Name:     cookieName,
		Path:     "/console/",
		HttpOnly: true,
		SameSite: http.SameSiteStrictMode,
		Secure:   c.secure(r),
	}
	if s == nil {
		ck.MaxAge = -1
	} else {
		ck.Value = s.secret
		ck.Expires = s.expiresAt
		ck.MaxAge = max(1, int(s.expiresAt.Sub(c.now()).Seconds()))
	}
	http.SetCookie(w, ck)
}

// secure reports whether the browser reaches the console over TLS (directly,
// or through a proxy in front of the configured https public URL).
func (c *Console) secure(r *http.Request) bool {
	return r.TLS != nil || strings.HasPrefix(c.base, "https://")
}

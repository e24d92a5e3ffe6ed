// Package web is the web console of tollgate's approvals: a channel beside
// the approvals core, like approvals/slack. It shows pending approvals with
// live updates, each request in full (what will happen, the bound arguments,
// the quote and the maximum, every budget before and after, the policy, the
// agent, its client and its reason, a Worker's diff against what runs now),
// operations with their audit story, budgets and spend, and the audit chain;
// approvers approve, deny (with a reason the agent receives) and freeze
// agents through the same core calls as Slack and the CLI, recorded with
// via: web.
//
// Pages are html/template, rendered on the server, with one small plain
// script and one stylesheet embedded in the binary: no build step, no
// external asset. Every response carries a strict Content-Security-Policy
// (default-src 'self', no inline script or style), refuses framing, and pages
// with data are never cached. Text from agents, clients and voters goes
// through package display before html/template escapes it.
//
// People sign in with a single-use, short-lived link bound to one approver
// (MintLink; tollgate approvals open, or Slack's Review in console button),
// which opens a session kept in an HttpOnly, SameSite=Strict cookie. Every
// POST carries the session's CSRF token and must come from this origin.
package web

import (
	"bytes"
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/tollgatehq/tollgate/approvals"
	"github.com/tollgatehq/tollgate/approvals/display"
	"github.com/tollgatehq/tollgate/ledger/money"
	"github.com/tollgatehq/tollgate/ledger/store"
)

//go:embed templates/*.html
var templateFiles embed.FS

//go:embed static
var staticFiles embed.FS

// Config configures a Console.
type Config struct {
	// Source is the ledger side of the console; required.
	Source Source
	// BaseURL is the console's public address (console.public_url), used in
	// links and to set Secure cookies behind a TLS proxy; "" = the address
	// the browser used.
	BaseURL string
	// LinkTTL is how long a sign-in link stays valid; default DefaultLinkTTL.
	LinkTTL time.Duration
	// SessionTTL is how long a session lasts; default DefaultSessionTTL.
	SessionTTL time.Duration
	// Logger receives the console's logs; default slog.Default().
	Logger *slog.Logger
}

// Console serves /console/.
type Console struct {
	svc        *approvals.Service
	st         *store.Store
	src        Source
	base       string
	linkTTL    time.Duration
	sessionTTL time.Duration
	log        *slog.Logger
	pages      map[string]*template.Template
	static     http.Handler
}

// New builds the console of svc.
func New(svc *approvals.Service, cfg Config) (*Console, error) {
	if svc == nil || cfg.Source == nil {
		return nil, errors.New("web console: the approvals service and a Source are required")
	}
	if cfg.BaseURL != "" {
		if err := CheckBaseURL(cfg.BaseURL); err != nil {
			return nil, err
		}
	}
	c := &Console{
		svc: svc, st: svc.Store(), src: cfg.Source, base: strings.TrimSuffix(cfg.BaseURL, "/"),
		linkTTL: cfg.LinkTTL, sessionTTL: cfg.SessionTTL, log: cfg.Logger,
	}
	if c.linkTTL <= 0 {
		c.linkTTL = DefaultLinkTTL
	}
	if c.sessionTTL <= 0 {
		c.sessionTTL = DefaultSessionTTL
	}
	if c.log == nil {
		c.log = slog.Default()
	}
	c.log = c.log.With(slog.String("component", "approvals/web"))
	var err error
	if c.pages, err = parsePages(c.funcs()); err != nil {
		return nil, err
	}
	sub, err := fs.Sub(staticFiles, "static")
	if err != nil {
		return nil, err
	}
	c.static = http.StripPrefix("/console/static/", http.FileServerFS(sub))
	return c, nil
}

func (c *Console) now() time.Time { return c.svc.Now() }

// pageFiles are the pages; each is parsed with layout.html.
var pageFiles = []string{"inbox.html", "approval.html", "operations.html", "operation.html", "budgets.html", "audit.html", "signin.html", "message.html"}

func parsePages(funcs template.FuncMap) (map[string]*template.Template, error) {
	out := map[string]*template.Template{}
	for _, p := range pageFiles {
		t, err := template.New(p).Funcs(funcs).ParseFS(templateFiles, "templates/layout.html", "templates/"+p)
		if err != nil {
			return nil, fmt.Errorf("console page %s: %w", p, err)
		}
		out[p] = t
	}
	return out, nil
}

// funcs are the template helpers. Every one that shows text someone else
// wrote runs it through display first.
func (c *Console) funcs() template.FuncMap {
	return template.FuncMap{
		"t":     func(s string, n int) string { return display.Text(s, n) },
		"money": func(m money.Money) string { return m.String() },
		"when":  func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05 UTC") },
		"clock": func(t time.Time) string { return t.UTC().Format("15:04:05") },
		"until": func(t time.Time) string { return display.Duration(t.Sub(c.now())) },
		"since": func(t time.Time) string { return display.Duration(c.now().Sub(t)) },
		"via":   approvals.ViaLabel,
		"lines": func(s string, n int) []string {
			ls := strings.Split(s, "\n")
			for i, l := range ls {
				ls[i] = display.Text(l, n)
			}
			return ls
		},
		"quorum":      func(r approvals.Request) int { return max(r.Quorum, 1) },
		"hours":       func(d time.Duration) int { return int(d / time.Hour) },
		"dayLabel":    dayLabel,
		"columnTitle": columnTitle,
		"short": func(s string) string {
			if len(s) > 16 {
				return s[:12] + "…"
			}
			return s
		},
	}
}

// csp is the Content-Security-Policy of every console response: nothing but
// this origin's own script, style and images; no inline script or style, no
// plugins, no framing, forms only to this origin.
const csp = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
	"object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// Handler serves every /console/ route. Mount it on the server's listener
// behind its Host and Origin checks, not behind the MCP bearer auth: people
// sign in with links.
func (c *Console) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /console/{$}", c.signedIn(c.inbox))
	mux.HandleFunc("GET /console/inbox/pending", c.signedIn(c.inboxPending))
	mux.HandleFunc("GET /console/approvals/{id}", c.signedIn(c.approval))
	mux.HandleFunc("GET /console/approvals/{id}/live", c.signedIn(c.approvalLive))
	mux.HandleFunc("POST /console/approvals/{id}/approve-mandate", c.signedInPost(c.approveMandate))
	mux.HandleFunc("POST /console/approvals/{id}/{action}", c.signedInPost(c.act))
	mux.HandleFunc("GET /console/operations", c.signedIn(c.operations))
	mux.HandleFunc("GET /console/operations/{id}", c.signedIn(c.operation))
	mux.HandleFunc("GET /console/budgets", c.signedIn(c.budgets))
	mux.HandleFunc("GET /console/audit", c.signedIn(c.audit))
	mux.HandleFunc("GET /console/events", c.signedIn(c.events))
	mux.HandleFunc("GET /console/signin", c.signInPage)
	mux.HandleFunc("POST /console/signin", c.signIn)
	mux.HandleFunc("POST /console/signout", c.signedInPost(c.signOut))
	// Other features add their forms here (POST /console/… through
	// signedInPost) and their parts of the approval page in approval.html's
	// "approval-extra" block.
	mux.Handle("GET /console/static/", c.static)
	mux.HandleFunc("/console/", func(w http.ResponseWriter, r *http.Request) {
		c.message(w, r, http.StatusNotFound, "Not found", "There is no such page in the console.", "")
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", csp)
		h.Set("X-Frame-Options", "DENY")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "same-origin")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		h.Set("Cross-Origin-Resource-Policy", "same-origin")
		if !strings.HasPrefix(r.URL.Path, "/console/static/") {
			h.Set("Cache-Control", "no-store")
		} else {
			h.Set("Cache-Control", "public, max-age=300")
		}
		mux.ServeHTTP(w, r)
	})
}

// view is what every page template gets.
type view struct {
	Title    string
	Nav      string // inbox | operations | budgets | audit
	Approver string
	CSRF     string
	Live     string // the fragment the page refreshes on change; "" = none
	Notice   string // a fixed sentence after an action
	Refused  string // why an action changed nothing
	Data     any
}

// handler is a page of a signed-in approver.
type handler func(w http.ResponseWriter, r *http.Request, s session) error

// signedIn runs h for a signed-in approver; anyone else gets the signed-out
// page (or, arriving from another site, one reload: SameSite=Strict keeps the
// cookie off cross-site navigations, and the reload is same-site).
func (c *Console) signedIn(h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s, ok := c.sessionOf(r)
		if !ok {
			c.signedOut(w, r)
			return
		}
		if err := h(w, r, s); err != nil {
			c.fail(w, r, err)
		}
	}
}

// signedInPost runs h for a POST from this origin, with the session's CSRF
// token, by a signed-in approver. Anything else is refused with 403 and
// changes nothing.
func (c *Console) signedInPost(h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
		if !c.sameOrigin(r) {
			c.message(w, r, http.StatusForbidden, "Refused", "This form was not sent from this console (Origin), so nothing changed.", "")
			return
		}
		s, ok := c.sessionOf(r)
		if !ok {
			c.message(w, r, http.StatusForbidden, "Signed out", "Your session has ended, so nothing changed. Sign in again with tollgate approvals open.", "")
			return
		}
		if err := r.ParseForm(); err != nil || !checkCSRF(s, r.PostFormValue("csrf")) {
			c.message(w, r, http.StatusForbidden, "Refused", "This form carries no valid CSRF token for your session, so nothing changed. Reload the page and try again.", "")
			return
		}
		if err := h(w, r, s); err != nil {
			c.fail(w, r, err)
		}
	}
}

func (c *Console) signedOut(w http.ResponseWriter, r *http.Request) {
	v := view{Title: "Sign in", Data: signedOutData{Renavigate: r.Header.Get("Sec-Fetch-Site") == "cross-site" && r.URL.Query().Get("again") == ""}}
	c.render(w, r, http.StatusUnauthorized, "message.html", v)
}

type signedOutData struct {
	Renavigate bool
	Heading    string
	Text       string
	Link       string
}

// message renders a page with one sentence.
func (c *Console) message(w http.ResponseWriter, r *http.Request, status int, heading, text, link string) {
	c.render(w, r, status, "message.html", view{Title: heading, Data: signedOutData{Heading: heading, Text: text, Link: link}})
}

// fail logs an internal error and shows a page that says so.
func (c *Console) fail(w http.ResponseWriter, r *http.Request, err error) {
	var nf notFound
	if errors.As(err, &nf) {
		c.message(w, r, http.StatusNotFound, "Not found", string(nf), "")
		return
	}
	c.log.ErrorContext(r.Context(), "console page failed", slog.String("path", r.URL.Path), slog.String("error", err.Error()))
	c.message(w, r, http.StatusInternalServerError, "Something went wrong", "tollgate could not show this page: "+display.Text(err.Error(), 300), "")
}

type notFound string

func (n notFound) Error() string { return string(n) }

// render executes a page into a buffer first, so a template error never
// leaves half a page.
func (c *Console) render(w http.ResponseWriter, r *http.Request, status int, page string, v view) {
	c.renderTemplate(w, r, status, page, "layout", v)
}

func (c *Console) renderTemplate(w http.ResponseWriter, r *http.Request, status int, page, name string, v any) {
	var buf bytes.Buffer
	if err := c.pages[page].ExecuteTemplate(&buf, name, v); err != nil {
		c.log.ErrorContext(r.Context(), "render console page", slog.String("page", page), slog.String("error", err.Error()))
		http.Error(w, "tollgate could not render this page", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// viewFor starts a page's view for session s.
func viewFor(s session, title, nav string) view {
	return view{Title: title, Nav: nav, Approver: s.approver, CSRF: csrfToken(s)}
}

// bg is a context for reads that must not end with a slow browser.
func bg(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), 30*time.Second)
}

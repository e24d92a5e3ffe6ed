package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/slack-go/slack"
	"github.com/slack-go/slack/socketmode"

	"github.com/tollgatehq/tollgate/authz"
	policies "github.com/tollgatehq/tollgate/cerbos-policies"
	"github.com/tollgatehq/tollgate/cloudflare"
	"github.com/tollgatehq/tollgate/cloudflare/sandbox"
	"github.com/tollgatehq/tollgate/ledger/store"
	"github.com/tollgatehq/tollgate/server"
)

func runServe(ctx context.Context, args []string, out io.Writer) error {
	fs := newFlagSet("serve", "run the MCP server")
	cf := addConfigFlags(fs, serveSettings...)
	logLevel := fs.String("log-level", "info", "debug, info, warn or error (logs go to stderr)")
	logFormat := fs.String("log-format", "text", "text or json")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("serve takes no arguments, got %q", fs.Args())}
	}
	cfg, err := cf.load()
	if err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("invalid configuration:\n%w", err)
	}
	// Logs always go to stderr: under stdio, stdout is the protocol.
	log, err := newLogger(os.Stderr, *logLevel, *logFormat)
	if err != nil {
		return err
	}
	rt, err := start(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer rt.close()

	if cfg.Transport == "stdio" {
		log.Info("serving MCP on stdio", "agent", cfg.Agent)
		err := rt.srv.ServeStdio(ctx, os.Stdin, out)
		if errors.Is(err, context.Canceled) || errors.Is(err, io.EOF) {
			return nil
		}
		return err
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.Listen, err)
	}
	if host, _, _ := net.SplitHostPort(cfg.Listen); (host == "" || host == "0.0.0.0" || host == "::") && len(cfg.AllowedHosts) == 0 {
		log.Warn("listening on every interface, but only loopback names pass the Host check: add the names clients use to allowed_hosts", "listen", cfg.Listen)
	}
	printConnectHelp(os.Stderr, cfg, ln.Addr().String(), cf.stdioArgs())
	err = rt.srv.ListenAndServe(ctx, ln)
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// runtime is everything serve (and demo) starts, closed in reverse order.
type runtime struct {
	srv     *server.Server
	closers []func()
}

func (r *runtime) close() {
	for i := len(r.closers) - 1; i >= 0; i-- {
		r.closers[i]()
	}
}

// start opens the ledger, starts or connects to Cerbos, picks the real
// Cloudflare account or the sandbox, connects Slack, and starts the server.
func start(ctx context.Context, cfg server.Config, log *slog.Logger) (_ *runtime, err error) {
	// rt is not the named result: every failure returns nil, and the deferred
	// cleanup must still close what was started before it.
	rt := &runtime{}
	defer func() {
		if err != nil {
			rt.close()
		}
	}()
	db, err := openLedger(ctx, cfg, log, creates)
	if err != nil {
		return nil, err
	}
	rt.closers = append(rt.closers, func() { _ = db.Close() })

	az, policyDir, err := startPolicyEngine(ctx, cfg, log, rt)
	if err != nil {
		return nil, err
	}

	cfCfg, err := cloudflareConfig(ctx, cfg, log, rt)
	if err != nil {
		return nil, err
	}

	_, onSandbox := cfCfg.ParentSource.(sandboxParent)
	deps := server.Deps{DB: db, Authz: az, Cloudflare: cfCfg, Logger: log, Version: version, PolicyDir: policyDir, Sandbox: onSandbox}
	if cfg.Transport != "stdio" {
		// A person watches an HTTP server's terminal: one line per approval
		// requested and decided. (Under stdio, stderr is the client's log.)
		deps.Terminal = os.Stderr
	}
	var appToken string
	if tok := os.Getenv("SLACK_BOT_TOKEN"); tok != "" {
		opts := []slack.Option{}
		if cfg.Slack.APIURL != "" {
			opts = append(opts, slack.OptionAPIURL(cfg.Slack.APIURL))
		}
		appToken = os.Getenv("SLACK_APP_TOKEN")
		if appToken != "" {
			opts = append(opts, slack.OptionAppLevelToken(appToken))
		}
		deps.Slack = slack.New(tok, opts...)
		deps.SlackSigningSecret = os.Getenv("SLACK_SIGNING_SECRET")
		if cfg.Slack.Channel == "" {
			return nil, errors.New("SLACK_BOT_TOKEN is set but no channel: set TOLLGATE_SLACK_CHANNEL or slack.channel")
		}
		if deps.SlackSigningSecret == "" && appToken == "" {
			return nil, errors.New("SLACK_BOT_TOKEN is set but neither SLACK_SIGNING_SECRET (interactivity endpoint) nor SLACK_APP_TOKEN (Socket Mode): approvals could not arrive")
		}
		log.Info("posting approval requests to Slack", "channel", cfg.Slack.Channel, "socket_mode", appToken != "")
	} else {
		log.Info("Slack not configured (no SLACK_BOT_TOKEN): approve with `tollgate approvals approve ID`")
	}

	srv, err := server.New(cfg, deps)
	if err != nil {
		return nil, err
	}
	if err := srv.Start(ctx); err != nil {
		return nil, err
	}
	rt.srv = srv
	rt.closers = append(rt.closers, srv.Close)
	if appToken != "" {
		sm := socketmode.New(deps.Slack)
		go func() {
			if err := srv.Slack().RunSocketMode(ctx, sm); err != nil && !errors.Is(err, context.Canceled) {
				log.Error("slack socket mode stopped", "err", err)
			}
		}()
	}
	return rt, nil
}

// startPolicyEngine connects to the configured PDP, or starts the managed one
// and returns the policy folder it serves ("" for an external PDP).
func startPolicyEngine(ctx context.Context, cfg server.Config, log *slog.Logger, rt *runtime) (*authz.Client, string, error) {
	addr := cfg.Cerbos.Addr
	var opts []authz.Option
	if cfg.Cerbos.Timeout > 0 {
		opts = append(opts, authz.WithTimeout(cfg.Cerbos.Timeout))
	}
	var policies authz.PolicySource
	dir := ""
	if addr == "" {
		var err error
		if dir, err = policyDir(cfg, log); err != nil {
			return nil, "", err
		}
		m, err := authz.StartManaged(ctx, authz.ManagedConfig{PolicyDir: dir, Logger: log})
		if err != nil {
			return nil, "", fmt.Errorf("start the managed Cerbos PDP: %w", err)
		}
		rt.closers = append(rt.closers, func() { _ = m.Stop() })
		addr, policies = m.Addr(), m
		log.Info("managed Cerbos PDP ready", "policies", dir, "addr", addr)
	} else {
		switch {
		case cfg.Cerbos.TLSCA != "":
			opts = append(opts, authz.WithTLS(cfg.Cerbos.TLSCA))
		case cfg.Cerbos.Plaintext:
			opts = append(opts, authz.WithPlaintext())
		}
		log.Info("using external Cerbos PDP", "addr", addr)
		if cfg.Cerbos.MetricsAddr != "" && cfg.Cerbos.DecisionCache.Size > 0 {
			w, err := authz.WatchPolicies(ctx, authz.PolicyWatchConfig{
				PolicyDir: cfg.Cerbos.Policies, MetricsAddr: cfg.Cerbos.MetricsAddr, TLSCA: cfg.Cerbos.TLSCA, Logger: log,
			})
			if err != nil {
				return nil, "", fmt.Errorf("follow the external PDP's policies: %w", err)
			}
			rt.closers = append(rt.closers, w.Close)
			policies = w
		}
	}
	if dc := cfg.Cerbos.DecisionCache; policies != nil && dc.Size > 0 {
		opts = append(opts, authz.WithDecisionCache(authz.DecisionCacheConfig{Policies: policies, Size: dc.Size, TTL: dc.TTL}))
	}
	az, err := authz.NewClient(ctx, addr, opts...)
	if err != nil {
		return nil, "", fmt.Errorf("connect to Cerbos at %s: %w", addr, err)
	}
	rt.closers = append(rt.closers, func() { _ = az.Close() })
	return az, dir, nil
}

// policyDir is the folder the managed PDP serves. When the default folder is
// not here (tollgate started outside a checkout, e.g. from Claude Desktop),
// the built-in default policies are written beside the database and used.
func policyDir(cfg server.Config, log *slog.Logger) (string, error) {
	dir := cfg.Cerbos.Policies
	if _, err := os.Stat(dir); err == nil || dir != server.Default().Cerbos.Policies {
		return dir, nil
	}
	out := filepath.Join(filepath.Dir(localPath(cfg.DB)), "default-policies")
	if err := syncPolicies(out); err != nil {
		return "", fmt.Errorf("write the built-in policies to %s: %w", out, err)
	}
	log.Warn("no ./cerbos-policies here: using the built-in default policies; point --policies at your own folder to change them", "dir", out)
	return out, nil
}

// syncPolicies writes the built-in policies into dir, touching only the
// files that differ, so a PDP already watching dir (a running server, while a
// CLI command starts its own) never sees the folder vanish.
func syncPolicies(dir string) error {
	return fs.WalkDir(policies.FS, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		target := filepath.Join(dir, path)
		if d.IsDir() {
			return os.MkdirAll(target, 0o700)
		}
		want, err := fs.ReadFile(policies.FS, path)
		if err != nil {
			return err
		}
		if have, err := os.ReadFile(target); err == nil && bytes.Equal(have, want) {
			return nil
		}
		return os.WriteFile(target, want, 0o600)
	})
}

// cloudflareConfig returns the real account when a parent token
// (CLOUDFLARE_API_TOKEN or CLOUDFLARE_API_TOKEN_FILE) and
// CLOUDFLARE_ACCOUNT_ID are set (and --sandbox is not), else starts the
// in-process sandbox on loopback, its state kept beside the database and
// shared with every tollgate process on that database.
func cloudflareConfig(ctx context.Context, cfg server.Config, log *slog.Logger, rt *runtime) (cloudflare.Config, error) {
	source, err := parentSource(log)
	if err != nil {
		return cloudflare.Config{}, err
	}
	account := os.Getenv("CLOUDFLARE_ACCOUNT_ID")
	if !cfg.Cloudflare.Sandbox && source != nil && account != "" {
		log.Info("using the real Cloudflare account", "account", account, "parent_token", source.String())
		return cloudflare.Config{APIBase: cfg.Cloudflare.APIBase, AccountID: account, ParentSource: source, TokenTTL: cfg.Cloudflare.TokenTTL, RequestIP: cfg.Cloudflare.RequestIP}, nil
	}
	why := "no CLOUDFLARE_API_TOKEN (or CLOUDFLARE_API_TOKEN_FILE) and CLOUDFLARE_ACCOUNT_ID in the environment"
	switch {
	case cfg.Cloudflare.Sandbox:
		why = "--sandbox"
	case source != nil && account == "":
		why = "a parent token is set but CLOUDFLARE_ACCOUNT_ID is not: set both to use the real account"
	case source == nil && account != "":
		why = "CLOUDFLARE_ACCOUNT_ID is set but no parent token (CLOUDFLARE_API_TOKEN_FILE or CLOUDFLARE_API_TOKEN): set both to use the real account"
	}
	state, err := sandboxStatePath(cfg.DB, log)
	if err != nil {
		return cloudflare.Config{}, err
	}
	sb, err := sandbox.New(sandbox.Options{StateFile: state})
	if err != nil {
		return cloudflare.Config{}, fmt.Errorf("start the Cloudflare sandbox: %w", err)
	}
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	addr, err := sandbox.Serve(sctx, "127.0.0.1:0", sb)
	if err != nil {
		cancel()
		return cloudflare.Config{}, fmt.Errorf("start the Cloudflare sandbox: %w", err)
	}
	rt.closers = append(rt.closers, func() {
		cancel()
		if err := sb.Flush(); err != nil {
			log.Warn("writing the sandbox's pending token changes failed", "err", err)
		}
	})
	log.Warn("using the built-in Cloudflare sandbox: nothing is bought or deployed for real", "why", why, "api", "http://"+addr+"/client/v4/", "state", state)
	return cloudflare.Config{
		APIBase: "http://" + addr + "/client/v4/", AccountID: sb.AccountID(), ParentSource: sandboxParent{sb: sb, state: state},
		TokenTTL: cfg.Cloudflare.TokenTTL,
	}, nil
}

// inspectorVersion is the MCP inspector the printed commands run: the
// newest that runs on Node 20 and sends --header in CLI mode (the Taskfile's
// setup:npm installs the same, and the README's commands are tested with it).
const inspectorVersion = "0.22.0"

// printConnectHelp prints how to connect to this server: the HTTP endpoints,
// and client configs with every setting this server was started with that
// changes its behaviour (stdio gives the client a server of its own, on its
// own database).
func printConnectHelp(w io.Writer, cfg server.Config, addr string, stdioArgs []string) {
	scheme := "http"
	if cfg.TLS.Cert != "" {
		scheme = "https"
	}
	base := scheme + "://" + addr
	fmt.Fprintf(w, "\ntollgate %s is serving MCP\n", version)
	if cfg.Transport != "sse" {
		fmt.Fprintf(w, "  streamable HTTP  %s/mcp\n", base)
	}
	fmt.Fprintf(w, "  SSE              %s/sse\n", base)
	fmt.Fprintf(w, "  health, metrics  %s/healthz  %s/metrics\n", base, base)
	console := cfg.Console.PublicURL
	if console == "" {
		console = base
	}
	fmt.Fprintf(w, "  approvers        %s/console/  (sign in: tollgate approvals open)\n\n", strings.TrimSuffix(console, "/"))
	header := ""
	if cfg.Auth == "tokens" {
		header = ` --header "Authorization: Bearer $TOLLGATE_TOKEN"`
		fmt.Fprintln(w, "HTTP needs an agent token: tollgate agents create NAME --team TEAM --roles agent  (prints it once)")
	} else {
		fmt.Fprintf(w, "HTTP sessions act as agent %q (auth none, loopback only)\n", cfg.Agent)
	}
	endpoint, transport := base+"/mcp", "http"
	if cfg.Transport == "sse" {
		endpoint, transport = base+"/sse", "sse"
	}
	fmt.Fprintln(w, "Connect:")
	fmt.Fprintf(w, "  Claude Code     claude mcp add --transport %s tollgate %s%s\n", transport, endpoint, header)
	fmt.Fprintf(w, "  MCP inspector   npx -y @modelcontextprotocol/inspector@%s --cli %s --transport %s%s --method tools/list\n", inspectorVersion, endpoint, transport, header)
	exe, env, args, withheld := stdioServer(cfg, stdioArgs)
	code := []string{"claude", "mcp", "add", "tollgate"}
	for _, k := range slices.Sorted(maps.Keys(env)) {
		code = append(code, "-e", k+"="+env[k])
	}
	code = append(append(code, "--", exe, "serve", "--transport", "stdio"), args...)
	fmt.Fprintf(w, "  Claude Code (stdio, on this ledger)\n                  %s\n", shellJoin(code))
	// The transport goes in env, not args: the inspector's CLI would take a
	// --transport among the server's args for its own.
	env["TOLLGATE_TRANSPORT"] = "stdio"
	desktop, _ := json.Marshal(map[string]any{"mcpServers": map[string]any{"tollgate": map[string]any{
		"command": exe, "args": append([]string{"serve"}, args...), "env": env,
	}}})
	fmt.Fprintf(w, "  Claude Desktop  %s\n", desktop)
	if withheld {
		fmt.Fprintf(w, "  The stdio configs leave the database password out: replace %s in TOLLGATE_DB with it\n"+
			"  (or drop it there and keep it in ~/.pgpass or PGPASSWORD).\n", dbPasswordPlaceholder)
	}
	fmt.Fprintln(w)
}

// dbPasswordPlaceholder stands for the PostgreSQL password in the stdio
// configs serve prints: they are pasted into client config files, chat and
// tickets, so they never carry the secret itself.
const dbPasswordPlaceholder = "PASSWORD"

// withoutDBPassword is a PostgreSQL URL with its password (the URL's user
// password, a password or sslpassword parameter) replaced by
// dbPasswordPlaceholder, and whether there was one to replace. A URL that
// does not parse is replaced whole, keeping its scheme: whatever it holds
// may be a secret.
func withoutDBPassword(dsn string) (string, bool) {
	u, err := url.Parse(dsn)
	if err != nil {
		scheme, _, _ := strings.Cut(dsn, "://")
		return scheme + "://USER:" + dbPasswordPlaceholder + "@HOST:PORT/DATABASE", true
	}
	withheld := false
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), dbPasswordPlaceholder)
		withheld = true
	}
	q := u.Query()
	for _, k := range []string{"password", "sslpassword"} {
		if q.Has(k) {
			q.Set(k, dbPasswordPlaceholder)
			withheld = true
		}
	}
	if withheld {
		u.RawQuery = q.Encode()
	}
	return u.String(), withheld
}

// stdioServer is the command, environment and arguments (after serve) of a
// stdio server that behaves like this one: the same binary, agent, config
// file and settings, and this one's database — the one ledger every server
// shares — by its absolute path (Claude Desktop starts servers from an
// unknown folder). A PostgreSQL database goes in TOLLGATE_DB with its
// password replaced by dbPasswordPlaceholder; withheld says one was.
func stdioServer(cfg server.Config, stdioArgs []string) (exe string, env map[string]string, args []string, withheld bool) {
	exe, err := os.Executable()
	if err != nil {
		exe = "tollgate"
	}
	env = map[string]string{}
	if bin := os.Getenv("TOLLGATE_CERBOS_BIN"); bin != "" {
		if a, err := filepath.Abs(bin); err == nil {
			bin = a
		}
		env["TOLLGATE_CERBOS_BIN"] = bin
	}
	args = []string{"--agent", cfg.Agent}
	if store.IsPostgresDSN(cfg.DB) {
		env["TOLLGATE_DB"], withheld = withoutDBPassword(cfg.DB)
	} else {
		db := cfg.DB
		if abs, err := filepath.Abs(db); err == nil {
			db = abs
		}
		args = append(args, "--db", db)
	}
	return exe, env, append(args, stdioArgs...), withheld
}

// shellJoin quotes args for a POSIX shell where they need it.
func shellJoin(args []string) string {
	out := make([]string, len(args))
	for i, a := range args {
		if a != "" && strings.IndexFunc(a, func(r rune) bool {
			return !(r == '-' || r == '_' || r == '.' || r == '/' || r == ':' || r == '=' || r == ',' || r == '@' || r == '+' ||
				(r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9'))
		}) < 0 {
			out[i] = a
			continue
		}
		out[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return strings.Join(out, " ")
}

// localPath is the path files kept beside the database are placed by: the
// SQLite file's, or the default file's for a PostgreSQL database (which has
// no folder of its own).
func localPath(db string) string {
	if store.IsPostgresDSN(db) {
		return store.DefaultPath
	}
	return db
}

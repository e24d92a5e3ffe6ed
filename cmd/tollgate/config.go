package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tollgatehq/tollgate/approvals"
	"github.com/tollgatehq/tollgate/approvals/display"
	"github.com/tollgatehq/tollgate/ledger"
	"github.com/tollgatehq/tollgate/ledger/store"
	"github.com/tollgatehq/tollgate/server"
)

func newFlagSet(name, summary string) *flag.FlagSet {
	fs := flag.NewFlagSet("tollgate "+name, flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "tollgate %s: %s\n\nFlags:\n", name, summary)
		fs.PrintDefaults()
	}
	return fs
}

// setting is one configuration value reachable by flag, environment
// variable and tollgate.yaml, applied in that order of precedence.
type setting struct {
	flag, env, usage string
	apply            func(c *server.Config, v string) error
	isBool           bool
	isPath           bool // a file or folder, made absolute in printed client configs
}

// boolValue is a string-backed flag that may be given without a value
// (--sandbox), as a boolean flag.
type boolValue struct{ s *string }

func (b boolValue) String() string {
	if b.s == nil {
		return ""
	}
	return *b.s
}
func (b boolValue) Set(v string) error { *b.s = v; return nil }
func (b boolValue) IsBoolFlag() bool   { return true }

func durationSetting(flagName, env, usage string, field func(c *server.Config) *time.Duration) setting {
	return setting{flag: flagName, env: env, usage: usage, apply: func(c *server.Config, v string) error {
		d, err := time.ParseDuration(v)
		if err != nil {
			return fmt.Errorf("--%s %q: a Go duration such as 50s or 30m", flagName, v)
		}
		*field(c) = d
		return nil
	}}
}

func intSetting(flagName, env, usage string, field func(c *server.Config) *int64) setting {
	return setting{flag: flagName, env: env, usage: usage, apply: func(c *server.Config, v string) error {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return fmt.Errorf("--%s %q: a whole number", flagName, v)
		}
		*field(c) = n
		return nil
	}}
}

func stringSetting(flagName, env, usage string, field func(c *server.Config) *string) setting {
	return setting{flag: flagName, env: env, usage: usage, apply: func(c *server.Config, v string) error { *field(c) = v; return nil }}
}

func pathSetting(flagName, env, usage string, field func(c *server.Config) *string) setting {
	s := stringSetting(flagName, env, usage, field)
	s.isPath = true
	return s
}

func boolSetting(flagName, env, usage string, field func(c *server.Config) *bool) setting {
	return setting{flag: flagName, env: env, usage: usage, isBool: true, apply: func(c *server.Config, v string) error {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("--%s %q: true or false", flagName, v)
		}
		*field(c) = b
		return nil
	}}
}

var (
	dbSetting       = stringSetting("db", "TOLLGATE_DB", "database: a SQLite file, or a postgres:// URL shared by several replicas", func(c *server.Config) *string { return &c.DB })
	auditKeySetting = pathSetting("audit-key", "TOLLGATE_AUDIT_KEY_FILE",
		"audit key file, created 0600 when missing; every process on a database must use the same one (default: audit.key beside the config file, else $XDG_CONFIG_HOME/tollgate/audit.key)",
		func(c *server.Config) *string { return &c.Audit.KeyFile })
	checkpointFileSetting = pathSetting("audit-checkpoint-file", "TOLLGATE_AUDIT_CHECKPOINT_FILE", "append-only file of signed audit checkpoints (the server writes it; verify checks against it)",
		func(c *server.Config) *string { return &c.Audit.CheckpointFile })
	// ledgerSettings are the settings of every subcommand that opens the database.
	ledgerSettings = []setting{dbSetting, auditKeySetting}

	serveSettings = []setting{
		stringSetting("transport", "TOLLGATE_TRANSPORT", "stdio, http (streamable HTTP on /mcp plus SSE on /sse) or sse", func(c *server.Config) *string { return &c.Transport }),
		stringSetting("listen", "TOLLGATE_LISTEN", "HTTP listen address", func(c *server.Config) *string { return &c.Listen }),
		dbSetting,
		auditKeySetting,
		checkpointFileSetting,
		stringSetting("agent", "TOLLGATE_AGENT", "agent name for stdio sessions (and HTTP with --auth none)", func(c *server.Config) *string { return &c.Agent }),
		stringSetting("auth", "TOLLGATE_AUTH", "tokens (agent bearer tokens on HTTP) or none (loopback or TLS only)", func(c *server.Config) *string { return &c.Auth }),
		boolSetting("sandbox", "TOLLGATE_SANDBOX", "use the built-in Cloudflare sandbox even when credentials are set", func(c *server.Config) *bool { return &c.Cloudflare.Sandbox }),
		stringSetting("cloudflare-api-base", "TOLLGATE_CLOUDFLARE_API_BASE", "Cloudflare API base URL used with CLOUDFLARE_API_TOKEN (proxies, or a tollgate sandbox in another process)", func(c *server.Config) *string { return &c.Cloudflare.APIBase }),
		rotateEverySetting,
		stringSetting("cerbos-addr", "TOLLGATE_CERBOS_ADDR", "external Cerbos PDP (host:port or unix:/path); empty starts a managed PDP", func(c *server.Config) *string { return &c.Cerbos.Addr }),
		pathSetting("cerbos-tls-ca", "TOLLGATE_CERBOS_TLS_CA", "CA file for an external PDP over TLS", func(c *server.Config) *string { return &c.Cerbos.TLSCA }),
		boolSetting("cerbos-plaintext", "TOLLGATE_CERBOS_PLAINTEXT", "connect to an external TCP PDP without TLS", func(c *server.Config) *bool { return &c.Cerbos.Plaintext }),
		pathSetting("policies", "TOLLGATE_POLICIES", "policy folder for the managed PDP (or the one an external PDP serves, with --cerbos-metrics)", func(c *server.Config) *string { return &c.Cerbos.Policies }),
		stringSetting("cerbos-metrics", "TOLLGATE_CERBOS_METRICS", "an external PDP's HTTP listener (http://host:3592 or unix:/path), to cache its decisions across its policy reloads", func(c *server.Config) *string { return &c.Cerbos.MetricsAddr }),
		stringSetting("tls-cert", "TOLLGATE_TLS_CERT", "serve HTTPS with this certificate (PEM)", func(c *server.Config) *string { return &c.TLS.Cert }),
		stringSetting("tls-key", "TOLLGATE_TLS_KEY", "key for --tls-cert (PEM)", func(c *server.Config) *string { return &c.TLS.Key }),
		stringSetting("tls-client-ca", "TOLLGATE_TLS_CLIENT_CA", "require client certificates signed by this CA (PEM)", func(c *server.Config) *string { return &c.TLS.ClientCA }),
		stringSetting("slack-channel", "TOLLGATE_SLACK_CHANNEL", "Slack channel for approval requests", func(c *server.Config) *string { return &c.Slack.Channel }),
		stringSetting("slack-api-url", "TOLLGATE_SLACK_API_URL", "Slack Web API base URL (tests, proxies)", func(c *server.Config) *string { return &c.Slack.APIURL }),
		stringSetting("console-url", "TOLLGATE_CONSOLE_URL", "the web console's public URL (console.public_url): sign-in links, MCP elicitation links, Slack's Review in console", func(c *server.Config) *string { return &c.Console.PublicURL }),
		durationSetting("approval-wait", "TOLLGATE_APPROVAL_WAIT", "how long a tool call waits for a decision", func(c *server.Config) *time.Duration { return &c.Approvals.Wait }),
		durationSetting("lease-ttl", "TOLLGATE_LEASE_TTL", "on PostgreSQL, how long a replica may miss heartbeats before another takes its unfinished work over", func(c *server.Config) *time.Duration { return &c.LeaseTTL }),
		durationSetting("approval-expiry", "TOLLGATE_APPROVAL_EXPIRY", "how long an approval request stays open", func(c *server.Config) *time.Duration { return &c.Approvals.Expiry }),
		intSetting("max-body-bytes", "TOLLGATE_MAX_BODY_BYTES", "largest request body on /mcp and /message, in bytes (http.max_body_bytes; 0 = sized for the largest Worker module)", func(c *server.Config) *int64 { return &c.HTTP.MaxBodyBytes }),
		durationSetting("body-read-timeout", "TOLLGATE_BODY_READ_TIMEOUT", "how long a request body may take to arrive (http.body_read_timeout)", func(c *server.Config) *time.Duration { return &c.HTTP.BodyReadTimeout }),
		durationSetting("idle-timeout", "TOLLGATE_IDLE_TIMEOUT", "how long an idle keep-alive connection stays open (http.idle_timeout)", func(c *server.Config) *time.Duration { return &c.HTTP.IdleTimeout }),
		intSetting("max-in-flight", "TOLLGATE_MAX_IN_FLIGHT", "MCP requests one agent may have in flight at once; more get 429 (http.max_in_flight_per_agent; 0 = no cap)", func(c *server.Config) *int64 { return &c.HTTP.MaxInFlightPerAgent }),
		intSetting("max-sessions", "TOLLGATE_MAX_SESSIONS", "MCP sessions one agent may hold open at once; one more gets 429 (http.max_sessions_per_agent; 0 = no cap)", func(c *server.Config) *int64 { return &c.HTTP.MaxSessionsPerAgent }),
		durationSetting("session-idle-timeout", "TOLLGATE_SESSION_IDLE_TIMEOUT", "end a streamable HTTP session unused this long, never one with a request in flight or an open stream (http.session_idle_timeout; 0 = only on DELETE)", func(c *server.Config) *time.Duration { return &c.HTTP.SessionIdleTimeout }),
	}
)

// configFlags registers --config and the given settings on fs.
type configFlags struct {
	fs       *flag.FlagSet
	path     *string
	settings []setting
	values   map[string]*string
	// What load used: the config file ("" when none) and every setting given
	// by flag or TOLLGATE_* variable, by flag name.
	file  string
	given map[string]string
}

func addConfigFlags(fs *flag.FlagSet, settings ...setting) *configFlags {
	cf := &configFlags{fs: fs, settings: settings, values: map[string]*string{}}
	cf.path = fs.String("config", "tollgate.yaml", "config file (TOLLGATE_CONFIG); optional when it is the default and missing")
	for _, s := range settings {
		if s.isBool {
			v := new(string)
			fs.Var(boolValue{v}, s.flag, s.usage+" ("+s.env+")")
			cf.values[s.flag] = v
			continue
		}
		cf.values[s.flag] = fs.String(s.flag, "", s.usage+" ("+s.env+")")
	}
	return cf
}

// load applies, in order: embedded defaults, the config file, TOLLGATE_*
// variables, then the flags that were given.
func (cf *configFlags) load() (server.Config, error) {
	set := map[string]bool{}
	cf.fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	path, explicit := *cf.path, set["config"]
	if env := os.Getenv("TOLLGATE_CONFIG"); env != "" && !explicit {
		path, explicit = env, true
	}
	cfg := server.Default()
	cf.file, cf.given = "", map[string]string{}
	if _, err := os.Stat(path); err == nil || explicit {
		c, err := server.LoadFile(path)
		if err != nil {
			return cfg, err
		}
		cfg, cf.file = c, path
	}
	for _, s := range cf.settings {
		if v, ok := os.LookupEnv(s.env); ok && v != "" {
			if err := s.apply(&cfg, v); err != nil {
				return cfg, fmt.Errorf("%s: %w", s.env, err)
			}
			cf.given[s.flag] = v
		}
	}
	for _, s := range cf.settings {
		if set[s.flag] {
			if err := s.apply(&cfg, *cf.values[s.flag]); err != nil {
				return cfg, err
			}
			cf.given[s.flag] = *cf.values[s.flag]
		}
	}
	if cfg.Audit.KeyFile == "" {
		cfg.Audit.KeyFile = defaultAuditKeyPath(path, cf.file != "")
	}
	return cfg, nil
}

// onlyHTTP are the serve settings a stdio server of the same behaviour does
// not take: its transport, listener, database and agent are its own.
var onlyHTTP = []string{"transport", "listen", "db", "agent", "auth", "tls-cert", "tls-key", "tls-client-ca"}

// stdioArgs are the flags that give a stdio server the behaviour of this
// one: its config file and every other setting it was given by flag or
// TOLLGATE_* variable (a client starts the server without this shell's
// environment, from an unknown folder, so paths are made absolute).
func (cf *configFlags) stdioArgs() []string {
	var args []string
	abs := func(p string) string {
		if a, err := filepath.Abs(p); err == nil {
			return a
		}
		return p
	}
	if cf.file != "" {
		args = append(args, "--config", abs(cf.file))
	}
	for _, s := range cf.settings {
		v, ok := cf.given[s.flag]
		if !ok || slices.Contains(onlyHTTP, s.flag) {
			continue
		}
		switch {
		case s.isBool:
			args = append(args, "--"+s.flag+"="+v)
		case s.isPath:
			args = append(args, "--"+s.flag, abs(v))
		default:
			args = append(args, "--"+s.flag, v)
		}
	}
	return args
}

// defaultAuditKeyPath is audit.key beside the config file when one is used,
// else in the user's config folder ($XDG_CONFIG_HOME/tollgate/audit.key):
// never beside the database, whose disk a tamperer may be able to write. ""
// when there is no such folder (no HOME): openLedger then asks for the key.
func defaultAuditKeyPath(configPath string, used bool) string {
	if used {
		return filepath.Join(filepath.Dir(configPath), "audit.key")
	}
	dir, err := os.UserConfigDir()
	if err != nil {
		return ""
	}
	return filepath.Join(dir, "tollgate", "audit.key")
}

// ledgerUse is what a subcommand does with the database; it decides whether
// the database and the audit key may be created.
type ledgerUse int

const (
	// reads: the database must exist; the audit key is used when its file exists.
	reads ledgerUse = iota
	// appends: the database must exist; the audit key is loaded, or created on first use.
	appends
	// creates: appends, and creates the database when it does not exist.
	creates
	// signs: the database and the audit key must exist (heads, bundles).
	signs
)

// loadAuditKey loads (or, for use >= appends, creates) the configured audit
// key; nil when use is reads and there is no key file.
func loadAuditKey(cfg server.Config, use ledgerUse) (*ledger.AuditKey, error) {
	path := cfg.Audit.KeyFile
	if path == "" {
		return nil, errors.New("no audit key location: there is no user config folder ($HOME or $XDG_CONFIG_HOME); set --audit-key, TOLLGATE_AUDIT_KEY_FILE or audit.key_file")
	}
	switch use {
	case appends, creates:
		return ledger.LoadOrCreateAuditKey(path)
	case signs:
		k, err := ledger.LoadAuditKey(path)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w; this needs the audit key every tollgate process on the database uses (--audit-key, TOLLGATE_AUDIT_KEY_FILE or audit.key_file)", err)
		}
		return k, err
	}
	k, err := ledger.LoadAuditKey(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	return k, err
}

// openLedger opens the database with every component's migrations and the
// audit key. A key file it had to create is announced in the log, or on
// stderr without one (never stdout, which may be the MCP protocol), and
// removed again when the database turns out to be keyed with another key.
func openLedger(ctx context.Context, cfg server.Config, log *slog.Logger, use ledgerUse, extra ...ledger.Option) (*ledger.DB, error) {
	key, err := loadAuditKey(cfg, use)
	if err != nil {
		return nil, err
	}
	opts := []ledger.Option{ledger.WithMigrations(approvals.Migrations), ledger.WithAuditKey(key)}
	if log != nil {
		opts = append(opts, ledger.WithLogger(log.With("subsystem", "ledger")))
	}
	opts = append(opts, ledger.WithAutoFreeze(cfg.AutoFreeze.Blocks, cfg.AutoFreeze.Within))
	if cfg.LeaseTTL > 0 {
		opts = append(opts, ledger.WithLeaseTTL(cfg.LeaseTTL))
	}
	db, err := ledger.Open(ctx, cfg.DB, append(opts, extra...)...)
	var mismatch *ledger.KeyMismatchError
	if errors.As(err, &mismatch) && key.Created() {
		_ = os.Remove(key.Path())
	}
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", store.RedactDSN(cfg.DB), err)
	}
	if key != nil && key.Created() {
		const msg = "created the audit key: back it up, keep it off the database's disk, and give every tollgate process on the database this same file"
		if log != nil {
			log.Warn(msg, "key_file", key.Path(), "key_id", key.ID(), "db", store.RedactDSN(cfg.DB))
		} else {
			fmt.Fprintf(os.Stderr, "tollgate: %s (%s, key id %s, database %s)\n", msg, key.Path(), key.ID(), store.RedactDSN(cfg.DB))
		}
	}
	return db, nil
}

// cliLedger is the config + ledger a CLI subcommand works on; it works while
// a server runs on the same file. Commands that do not create the database
// refuse one that does not exist, since a wrong --db would otherwise show an
// empty, freshly created one.
func cliLedger(ctx context.Context, cf *configFlags, use ledgerUse, extra ...ledger.Option) (server.Config, *ledger.DB, error) {
	cfg, err := cf.load()
	if err != nil {
		return cfg, nil, err
	}
	if _, err := os.Stat(cfg.DB); !store.IsPostgresDSN(cfg.DB) && errors.Is(err, fs.ErrNotExist) {
		if use != creates {
			return cfg, nil, fmt.Errorf("no database at %s (is --db or TOLLGATE_DB right?)", cfg.DB)
		}
		fmt.Fprintf(os.Stderr, "note: %s does not exist yet; creating it\n", cfg.DB)
	}
	db, err := openLedger(ctx, cfg, nil, use, extra...)
	return cfg, db, err
}

// onLedger opens the configured database for a subcommand, runs fn on it
// and closes it.
func onLedger(ctx context.Context, cf *configFlags, use ledgerUse, fn func(cfg server.Config, db *ledger.DB) error, extra ...ledger.Option) error {
	cfg, db, err := cliLedger(ctx, cf, use, extra...)
	if err != nil {
		return err
	}
	defer db.Close()
	return fn(cfg, db)
}

// newLogger is the server's log on w: level debug, info, warn or error;
// format text (key=value lines) or json (one object a line).
func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, usageError{fmt.Sprintf("--log-level %q: debug, info, warn or error", level)}
	}
	opts := &slog.HandlerOptions{Level: l}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, usageError{fmt.Sprintf("--log-format %q: text or json", format)}
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// tableCellMax caps one cell of a table, in characters.
const tableCellMax = 160

// table prints rows aligned in columns. Every cell is sanitised (display.Text):
// a name, summary or reason from an agent cannot break the row, move the
// cursor, reorder text with bidi controls or hide behind zero-width
// characters.
func table(w io.Writer, header []string, rows [][]string) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		cells := make([]string, len(r))
		for i, c := range r {
			cells[i] = display.Text(c, tableCellMax)
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	return tw.Flush()
}

// osUser is the local identity for the CLI approver and the actor of CLI
// changes: the account the process runs as, not an environment variable.
func osUser() string {
	if u, err := user.Current(); err == nil && u.Username != "" {
		return u.Username
	}
	return "uid:" + strconv.Itoa(os.Getuid())
}

func cliActor() string { return "cli:" + osUser() }

func fmtTime(t *time.Time) string {
	if t == nil || t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

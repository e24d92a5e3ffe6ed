package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestPrintedConfigsCarryTheServersBehaviour: the Claude Desktop and Claude
// Code configs serve prints give a stdio server this server's database (the
// one ledger they share, by its absolute path) and every setting this server
// was started with that changes behaviour — by flag, by TOLLGATE_* variable
// or in a config file — with absolute paths, and nothing that only an HTTP
// listener uses.
func TestPrintedConfigsCarryTheServersBehaviour(t *testing.T) {
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "tollgate.yaml")
	if err := os.WriteFile(cfgFile, []byte("approvals: {expiry: 10m}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)
	t.Setenv("TOLLGATE_CONFIG", "")
	t.Setenv("TOLLGATE_SLACK_CHANNEL", "C0APPROVALS")
	t.Setenv("TOLLGATE_CERBOS_BIN", "bin/cerbos")
	fs := newFlagSet("serve", "test")
	cf := addConfigFlags(fs, serveSettings...)
	if err := fs.Parse([]string{"--config", "tollgate.yaml", "--policies", "my-policies", "--sandbox", "--approval-wait", "5s",
		"--listen", "127.0.0.1:0", "--auth", "none", "--transport", "http", "--db", "var/t.db"}); err != nil {
		t.Fatal(err)
	}
	cfg, err := cf.load()
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	printConnectHelp(&out, cfg, "127.0.0.1:8787", cf.stdioArgs())
	help := out.String()

	var desktop struct {
		MCPServers map[string]struct {
			Command string            `json:"command"`
			Args    []string          `json:"args"`
			Env     map[string]string `json:"env"`
		} `json:"mcpServers"`
	}
	_, line, _ := strings.Cut(help, "Claude Desktop  ")
	line, _, _ = strings.Cut(line, "\n")
	if err := json.Unmarshal([]byte(line), &desktop); err != nil {
		t.Fatalf("Claude Desktop config %q: %v", line, err)
	}
	d := desktop.MCPServers["tollgate"]
	want := []string{"serve", "--agent", "local", "--db", filepath.Join(dir, "var", "t.db"),
		"--config", cfgFile, "--sandbox=true", "--policies", filepath.Join(dir, "my-policies"),
		"--slack-channel", "C0APPROVALS", "--approval-wait", "5s"}
	if !slices.Equal(d.Args, want) {
		t.Errorf("Claude Desktop args\n got %q\nwant %q", d.Args, want)
	}
	if d.Env["TOLLGATE_TRANSPORT"] != "stdio" || d.Env["TOLLGATE_CERBOS_BIN"] != filepath.Join(dir, "bin", "cerbos") || !filepath.IsAbs(d.Command) {
		t.Errorf("Claude Desktop command %q env %v", d.Command, d.Env)
	}
	for _, arg := range d.Args {
		if slices.Contains([]string{"--listen", "--auth", "--transport", "--log-level"}, arg) {
			t.Errorf("the stdio config carries %s, which a stdio server does not take (or the inspector would take)", arg)
		}
	}
	code := "-- " + d.Command + " serve --transport stdio " + strings.Join(d.Args[1:], " ")
	if !strings.Contains(help, "claude mcp add tollgate -e TOLLGATE_CERBOS_BIN="+filepath.Join(dir, "bin", "cerbos")+" "+code) {
		t.Errorf("the Claude Code stdio command does not match the Desktop config:\n%s", help)
	}
	for _, want := range []string{
		"claude mcp add --transport http tollgate http://127.0.0.1:8787/mcp\n",
		"npx -y @modelcontextprotocol/inspector@" + inspectorVersion + " --cli http://127.0.0.1:8787/mcp --transport http --method tools/list",
	} {
		if !strings.Contains(help, want) {
			t.Errorf("connect help lacks %q:\n%s", want, help)
		}
	}

	// With agent tokens, the HTTP commands send one.
	cfg.Auth = "tokens"
	out.Reset()
	printConnectHelp(&out, cfg, "127.0.0.1:8787", cf.stdioArgs())
	if !strings.Contains(out.String(), `--transport http --header "Authorization: Bearer $TOLLGATE_TOKEN" --method tools/list`) {
		t.Errorf("no bearer header in the inspector command:\n%s", out.String())
	}
}

func TestShellJoin(t *testing.T) {
	t.Parallel()
	if got := shellJoin([]string{"a", "b c", "it's", "", "--x=1"}); got != `a 'b c' 'it'\''s' '' --x=1` {
		t.Errorf("shellJoin: %s", got)
	}
}

// TestPrintedConfigsWithholdThePostgresPassword: on a PostgreSQL database the
// stdio configs serve prints name it in TOLLGATE_DB with the password (in
// the user part, or a password / sslpassword parameter) replaced by a
// placeholder the user is told to fill, never the secret; without a password
// the URL is given whole and nothing is said.
func TestPrintedConfigsWithholdThePostgresPassword(t *testing.T) {
	t.Setenv("TOLLGATE_CONFIG", "")
	t.Setenv("TOLLGATE_CERBOS_BIN", "")
	for name, c := range map[string]struct{ dsn, want string }{
		"user password": {
			"postgres://tollgate:s3cr3t-pw@db.internal:5432/tollgate?sslmode=verify-full",
			"postgres://tollgate:PASSWORD@db.internal:5432/tollgate?sslmode=verify-full",
		},
		"password parameter": {
			"postgresql://tollgate@db.internal/tollgate?password=s3cr3t-pw&sslpassword=s3cr3t-pw&sslmode=require",
			"postgresql://tollgate@db.internal/tollgate?password=PASSWORD&sslmode=require&sslpassword=PASSWORD",
		},
		"no password": {
			"postgres://tollgate@/tollgate?host=/run/postgresql",
			"",
		},
	} {
		t.Run(name, func(t *testing.T) {
			fs := newFlagSet("serve", "test")
			cf := addConfigFlags(fs, serveSettings...)
			if err := fs.Parse([]string{"--listen", "127.0.0.1:0", "--auth", "tokens", "--db", c.dsn, "--approval-wait", "5s"}); err != nil {
				t.Fatal(err)
			}
			cfg, err := cf.load()
			if err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			printConnectHelp(&out, cfg, "127.0.0.1:8787", cf.stdioArgs())
			help := out.String()
			if strings.Contains(help, "s3cr3t-pw") {
				t.Fatalf("the connect help shows the database password:\n%s", help)
			}
			var desktop struct {
				MCPServers map[string]struct {
					Args []string          `json:"args"`
					Env  map[string]string `json:"env"`
				} `json:"mcpServers"`
			}
			_, line, _ := strings.Cut(help, "Claude Desktop  ")
			line, _, _ = strings.Cut(line, "\n")
			if err := json.Unmarshal([]byte(line), &desktop); err != nil {
				t.Fatalf("Claude Desktop config %q: %v", line, err)
			}
			d := desktop.MCPServers["tollgate"]
			if want := []string{"serve", "--agent", "local", "--approval-wait", "5s"}; !slices.Equal(d.Args, want) {
				t.Errorf("Claude Desktop args\n got %q\nwant %q", d.Args, want)
			}
			want := c.want
			if want == "" {
				want = c.dsn
			}
			if d.Env["TOLLGATE_DB"] != want {
				t.Errorf("Claude Desktop TOLLGATE_DB %q, want %q", d.Env["TOLLGATE_DB"], want)
			}
			if !strings.Contains(help, "claude mcp add tollgate -e "+shellJoin([]string{"TOLLGATE_DB=" + want})+" -- ") {
				t.Errorf("the Claude Code stdio command does not carry TOLLGATE_DB=%s:\n%s", want, help)
			}
			note := strings.Contains(help, "replace PASSWORD in TOLLGATE_DB")
			if note != (c.want != "") {
				t.Errorf("note to fill the password shown %v, want %v:\n%s", note, c.want != "", help)
			}
		})
	}
}

func TestWithoutDBPasswordUnparseable(t *testing.T) {
	t.Parallel()
	got, withheld := withoutDBPassword("postgres://tollgate:s3cr%zz@host/db")
	if !withheld || strings.Contains(got, "s3cr") || !strings.HasPrefix(got, "postgres://") {
		t.Errorf("withoutDBPassword of an unparseable URL: %q %v", got, withheld)
	}
}

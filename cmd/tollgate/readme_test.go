//go:build linux

package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/mcp"
)

// The README's shell commands are executed, as a user would type them, by
// TestReadmeShellBlocks. Every ```sh block is preceded by a marker line:
//
//	<!-- readme-test: run -->
//	<!-- readme-test: skip: why it cannot run here -->
//
// A block without one, or a skip without a reason, fails the test, so new
// docs say whether they are tested. Runnable blocks run in README order in
// one throwaway installation (a temporary checkout-like folder with its own
// HOME, XDG folders, var/ and tollgate.yaml), with the substitutions below;
// each block is one `bash -euo pipefail` script, so every command must exit 0.

// readmeMarker matches a marker line.
var readmeMarker = regexp.MustCompile(`^<!-- readme-test: (run|skip:\s*(.*?)) -->$`)

// readmeTaskLines maps the `go tool task` commands a runnable block may use
// to what the test does instead (the task runner would install and build
// into the real checkout). A `go tool task` line not listed fails the test.
var readmeTaskLines = map[string]string{
	// `go tool task run` is `tollgate serve --auth none`: the test starts
	// exactly that, in the background, before the first block.
	"go tool task run": "started by the test: tollgate serve --auth none",
	"go tool task test": "skipped: the whole suite, this test included; " +
		"bash .ci/run runs it",
}

// readmeSubstitutions, for the record: what a runnable block's text is
// given instead of what only the reader can supply.
//
//	127.0.0.1:8787             the quickstart server's address, when 8787 is taken
//	127.0.0.1:8787 on a line   a second server, `tollgate serve` with agent tokens
//	  with "Bearer"            (the default --auth tokens), on a free port
//	$TOLLGATE_TOKEN, tg_…      a token of that server's agent "readme-bot"
//	npx -y @model…/inspector@V the pinned inspector installed by setup:npm
//	                           (.tools/npm/node_modules/.bin/mcp-inspector);
//	                           V must be that version (no network)
//	claude_desktop_config.json written into the folder first: the Claude
//	                           Desktop config the quickstart server printed
//	apr_…                      a pending approval of agent "local"'s, created
//	                           through MCP first; a line that approves or
//	                           denies uses up its own
//	op_…                       the operation of the latest such approval
//	--public-key KEY           the public_key of `tollgate audit head --json`
//	/etc/tollgate/             a folder of the installation
//	$TOKEN, CLOUDFLARE_ACCOUNT_ID=…
//	                           the parent token and account of a `tollgate
//	                           sandbox` process, which TOLLGATE_CLOUDFLARE_API_BASE
//	                           points the commands at
//
// tollgate.yaml maps approver bob (as in the Slack section) to the OS user
// running the test, so `--as bob` works and the OS user may approve.

// readmeBlock is one fenced ```sh block of the README.
type readmeBlock struct {
	line   int    // of the opening fence, 1-based
	marker string // "run", "skip", or "" when missing
	reason string // of a skip
	lines  []string
}

// readmeShellBlocks reads the ```sh blocks of a Markdown file with their markers.
func readmeShellBlocks(t *testing.T, path string) []readmeBlock {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(raw), "\n")
	var out []readmeBlock
	for i := 0; i < len(lines); i++ {
		trimmed := strings.TrimSpace(lines[i])
		if !strings.HasPrefix(trimmed, "```") {
			continue
		}
		info := strings.TrimSpace(strings.TrimPrefix(trimmed, "```"))
		indent := len(lines[i]) - len(strings.TrimLeft(lines[i], " "))
		end := i + 1
		for end < len(lines) && strings.TrimSpace(lines[end]) != "```" {
			end++
		}
		if lang, _, _ := strings.Cut(info, " "); lang == "sh" {
			b := readmeBlock{line: i + 1}
			if i > 0 {
				if m := readmeMarker.FindStringSubmatch(strings.TrimSpace(lines[i-1])); m != nil {
					b.marker = m[1]
					if strings.HasPrefix(m[1], "skip:") {
						b.marker, b.reason = "skip", strings.TrimSpace(m[2])
					}
				}
			}
			for _, l := range lines[i+1 : min(end, len(lines))] {
				if len(l)-len(strings.TrimLeft(l, " ")) >= indent {
					l = l[indent:]
				}
				b.lines = append(b.lines, l)
			}
			out = append(out, b)
		}
		i = end
	}
	return out
}

// logicalLines joins lines continued with a trailing backslash.
func logicalLines(lines []string) []string {
	var out []string
	cur := ""
	for _, l := range lines {
		if strings.HasSuffix(l, `\`) {
			cur += strings.TrimSuffix(l, `\`)
			continue
		}
		out = append(out, cur+l)
		cur = ""
	}
	if cur != "" {
		out = append(out, cur)
	}
	return out
}

// TestReadmeShellBlocksAreMarked: every ```sh block says whether the docs
// test runs it, and a skipped one says why.
func TestReadmeShellBlocksAreMarked(t *testing.T) {
	t.Parallel()
	blocks := readmeShellBlocks(t, filepath.Join("..", "..", "README.md"))
	if len(blocks) == 0 {
		t.Fatal("no ```sh blocks found in README.md")
	}
	for _, b := range blocks {
		switch {
		case b.marker == "":
			t.Errorf("README.md:%d: a ```sh block without a marker: put `<!-- readme-test: run -->` on the line before it (TestReadmeShellBlocks then runs it) or `<!-- readme-test: skip: REASON -->`", b.line)
		case b.marker == "skip" && b.reason == "":
			t.Errorf("README.md:%d: a skipped ```sh block must say why", b.line)
		}
	}
}

// readmeEnv is the throwaway installation the README's commands run in.
type readmeEnv struct {
	t       *testing.T
	dir     string // the "checkout": cwd of every command
	env     []string
	addr    string // the quickstart server (auth none)
	tokAddr string // the server with agent tokens
	token   string // readme-bot's token on it
	desktop string // the Claude Desktop config the quickstart server printed
	sbToken string // the sandbox process's parent token
	sbAcct  string
	inspect string // the installed inspector's bin
	pending string // the current pending approval, "" when used up
	lastOp  string
	apprSeq int
}

func TestReadmeShellBlocks(t *testing.T) {
	t.Parallel()
	blocks := readmeShellBlocks(t, filepath.Join("..", "..", "README.md"))
	// The quickstart server stands in for `go tool task run`: keep the two
	// the same command.
	taskfile, err := os.ReadFile(filepath.Join("..", "..", "Taskfile.yml"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(taskfile), "/bin/tollgate serve --auth none {{.CLI_ARGS}}'") {
		t.Fatal("the Taskfile's run task no longer runs `tollgate serve --auth none`: update readmeTaskLines and newReadmeEnv")
	}
	e := newReadmeEnv(t)
	ran := 0
	for _, b := range blocks {
		if b.marker != "run" {
			continue
		}
		ran++
		ok := t.Run(fmt.Sprintf("README.md:%d", b.line), func(t *testing.T) {
			e.t = t
			e.runBlock(b)
		})
		if !ok {
			// Later blocks build on earlier ones (the approval approved,
			// the agent created): stop at the first broken one.
			t.Fatalf("README.md:%d failed; the blocks after it were not run", b.line)
		}
	}
	if ran == 0 {
		t.Fatal("no runnable ```sh blocks in README.md")
	}
}

func newReadmeEnv(t *testing.T) *readmeEnv {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	cerbos := os.Getenv("TOLLGATE_CERBOS_BIN")
	if cerbos == "" {
		cerbos = filepath.Join(root, ".tools", "bin", "cerbos")
	}
	if _, err := os.Stat(cerbos); err != nil {
		t.Fatalf("no Cerbos binary (go tool task setup): %v", err)
	}
	inspectorPkg := filepath.Join(root, ".tools", "npm", "node_modules", "@modelcontextprotocol", "inspector")
	if v := npmVersion(t, inspectorPkg); v != inspectorVersion {
		t.Fatalf("the inspector in .tools/npm is %q, the README prints %s: run go tool task setup:npm", v, inspectorVersion)
	}
	if _, err := exec.LookPath("node"); err != nil {
		t.Fatalf("node is not on PATH; the inspector needs Node.js 20 or later: %v", err)
	}

	dir := t.TempDir()
	e := &readmeEnv{t: t, dir: dir, inspect: filepath.Join(root, ".tools", "npm", "node_modules", ".bin", "mcp-inspector")}
	// A checkout as `go tool task run` leaves it: the policies, and the
	// binary with Cerbos beside it in .tools/bin (serve finds it there).
	if err := os.CopyFS(filepath.Join(dir, "cerbos-policies"), os.DirFS(filepath.Join(root, "cerbos-policies"))); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, ".tools", "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	copyExecutable(t, tollgateBinary(t), filepath.Join(bin, "tollgate"))
	if err := os.Symlink(cerbos, filepath.Join(bin, "cerbos")); err != nil {
		t.Fatal(err)
	}
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf("approvers:\n  - {name: bob, os_user: %s, roles: [approver]}\n", me.Username)
	if err := os.WriteFile(filepath.Join(dir, "tollgate.yaml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	home := filepath.Join(dir, "home")
	for _, d := range []string{home, filepath.Join(dir, "etc", "tollgate")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(k, "TOLLGATE_"), strings.HasPrefix(k, "CLOUDFLARE_"), strings.HasPrefix(k, "SLACK_"),
			strings.HasPrefix(k, "XDG_"), k == "HOME", k == "PATH", k == "DISPLAY", k == "WAYLAND_DISPLAY", k == "BROWSER":
			continue
		}
		e.env = append(e.env, kv)
	}
	e.env = append(e.env, "HOME="+home,
		"XDG_CONFIG_HOME="+filepath.Join(home, ".config"), "XDG_DATA_HOME="+filepath.Join(home, ".local", "share"),
		"XDG_CACHE_HOME="+filepath.Join(home, ".cache"), "XDG_STATE_HOME="+filepath.Join(home, ".local", "state"),
		"PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"),
		"npm_config_offline=true", "NO_COLOR=1")

	// The quickstart server, on the documented port when it is free.
	e.addr = "127.0.0.1:8787"
	if ln, err := net.Listen("tcp", e.addr); err != nil {
		e.addr = freeAddr(t)
	} else {
		_ = ln.Close()
	}
	e.desktop = e.serve("quickstart", "serve", "--auth", "none", "--listen", e.addr)
	// The server with agent tokens, for the lines that send one.
	e.tokAddr = freeAddr(t)
	out := e.tollgate("agents", "create", "readme-bot", "--team", "web", "--roles", "agent", "--ttl", "1h")
	e.token = regexp.MustCompile(`tg_[A-Za-z0-9_-]+`).FindString(out)
	if e.token == "" {
		t.Fatalf("agents create printed no token:\n%s", out)
	}
	e.serve("tokens", "serve", "--listen", e.tokAddr)
	e.startSandbox()
	return e
}

// tollgate runs the installation's binary and returns its output.
func (e *readmeEnv) tollgate(args ...string) string {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(e.dir, ".tools", "bin", "tollgate"), args...)
	cmd.Dir, cmd.Env = e.dir, e.env
	out, err := cmd.CombinedOutput()
	if err != nil {
		e.t.Fatalf("tollgate %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// serve starts a tollgate server that lives as long as the test and waits
// for its connect help; it returns the Claude Desktop config printed there.
func (e *readmeEnv) serve(name string, args ...string) string {
	t := e.t
	t.Helper()
	cmd := exec.Command(filepath.Join(e.dir, ".tools", "bin", "tollgate"), args...)
	cmd.Dir, cmd.Env = e.dir, e.env
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	logs := &interopBuffer{}
	desktop := make(chan string, 1)
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			logs.WriteString(line + "\n")
			if _, cfg, ok := strings.Cut(line, "Claude Desktop  "); ok {
				select {
				case desktop <- cfg:
				default:
				}
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
	}()
	waited := make(chan error, 1)
	go func() { <-copied; waited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-waited:
			if err != nil {
				t.Errorf("%s server did not exit cleanly on SIGTERM: %v\n%s", name, err, logs.tail())
			}
		case <-time.After(2 * time.Minute):
			_ = cmd.Process.Kill()
			t.Errorf("%s server ignored SIGTERM\n%s", name, logs.tail())
		}
	})
	select {
	case cfg := <-desktop:
		return cfg
	case err := <-waited:
		waited <- err // for the cleanup
		t.Fatalf("%s server exited before it served: %v\n%s", name, err, logs.tail())
	case <-time.After(2 * time.Minute):
		t.Fatalf("%s server printed no connect help\n%s", name, logs.tail())
	}
	return ""
}

// startSandbox runs `tollgate sandbox` for the credentials commands.
func (e *readmeEnv) startSandbox() {
	t := e.t
	t.Helper()
	cmd := exec.Command(filepath.Join(e.dir, ".tools", "bin", "tollgate"), "sandbox", "--listen", "127.0.0.1:0", "--state", filepath.Join(e.dir, "var", "cloudflare-sandbox.json"))
	cmd.Dir, cmd.Env = e.dir, e.env
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Signal(syscall.SIGTERM); _ = cmd.Wait() })
	type banner struct{ api, acct, token string }
	got := make(chan banner, 1)
	go func() {
		var b banner
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			switch {
			case len(f) >= 5 && f[0] == "Cloudflare" && f[3] == "on":
				b.api = f[4]
			case len(f) >= 3 && f[0] == "account" && f[1] == "id":
				b.acct = f[2]
			case len(f) >= 3 && f[0] == "parent" && f[1] == "token":
				b.token = f[2]
				got <- b
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	select {
	case b := <-got:
		e.sbAcct, e.sbToken = b.acct, b.token
		e.env = append(e.env, "TOLLGATE_CLOUDFLARE_API_BASE="+b.api)
	case <-time.After(2 * time.Minute):
		t.Fatal("tollgate sandbox printed no banner")
	}
}

// newApproval makes agent "local" ask to register a domain through MCP on
// the quickstart server and returns the pending approval and its operation.
func (e *readmeEnv) newApproval() (string, string) {
	t := e.t
	t.Helper()
	e.apprSeq++
	domain := fmt.Sprintf("readme-%d-%d.dev", os.Getpid(), e.apprSeq)
	c, err := client.NewStreamableHttpClient("http://" + e.addr + "/mcp")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	init := mcp.InitializeRequest{}
	init.Params.ProtocolVersion = mcp.LATEST_PROTOCOL_VERSION
	init.Params.ClientInfo = mcp.Implementation{Name: "readme-test", Version: "1"}
	if _, err := c.Initialize(ctx, init); err != nil {
		t.Fatal(err)
	}
	// The call waits for a human (approvals.wait); the operation goes on
	// without the client, so give up on the call once its approval exists.
	callCtx, stop := context.WithCancel(ctx)
	defer stop()
	refused := make(chan string, 1)
	go func() {
		req := mcp.CallToolRequest{}
		req.Params.Name = "register_domain"
		req.Params.Arguments = map[string]any{"domain": domain, "reason": "trying the commands in the README"}
		if res, err := c.CallTool(callCtx, req); err == nil && res.IsError {
			refused <- fmt.Sprint(res.Content)
		}
	}()
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(100 * time.Millisecond) {
		select {
		case why := <-refused:
			// E.g. the global day budget (50 USD) is used up: the README
			// now decides more approvals than one day's budget holds.
			t.Fatalf("register_domain %s was refused, so there is no approval for the README's commands: %s", domain, why)
		default:
		}
		var reqs []struct {
			ID          string `json:"id"`
			OperationID string `json:"operation_id"`
			Summary     string `json:"summary"`
			State       string `json:"state"`
		}
		if err := json.Unmarshal([]byte(e.tollgate("approvals", "list", "--json")), &reqs); err != nil {
			t.Fatal(err)
		}
		for _, r := range reqs {
			if strings.Contains(r.Summary, domain) && r.State == "pending" {
				return r.ID, r.OperationID
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no pending approval for %s: %+v", domain, reqs)
		}
	}
}

var (
	readmeInspector = regexp.MustCompile(`npx -y @modelcontextprotocol/inspector@(\S+)`)
	readmeDecides   = regexp.MustCompile(`tollgate approvals (approve|deny) apr_…`)
)

// script turns a runnable block into the script that runs.
func (e *readmeEnv) script(b readmeBlock) string {
	t := e.t
	t.Helper()
	var out []string
	for _, l := range logicalLines(b.lines) {
		cmd, _, _ := strings.Cut(l, "#")
		cmd = strings.TrimSpace(cmd)
		if strings.HasPrefix(cmd, "go tool task") {
			what, ok := readmeTaskLines[cmd]
			if !ok {
				t.Fatalf("README.md:%d: %q: the test does not know what this task does; add it to readmeTaskLines", b.line, cmd)
			}
			out = append(out, ": "+shellJoin([]string{what}))
			continue
		}
		if m := readmeInspector.FindStringSubmatch(l); m != nil {
			if m[1] != inspectorVersion {
				t.Fatalf("README.md:%d: inspector %s, but serve prints and setup:npm installs %s", b.line, m[1], inspectorVersion)
			}
			l = strings.ReplaceAll(l, m[0], e.inspect)
		}
		if strings.Contains(l, "claude_desktop_config.json") {
			if err := os.WriteFile(filepath.Join(e.dir, "claude_desktop_config.json"), []byte(e.desktop), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		if strings.Contains(l, "Bearer") {
			l = strings.ReplaceAll(l, "127.0.0.1:8787", e.tokAddr)
		}
		l = strings.ReplaceAll(l, "127.0.0.1:8787", e.addr)
		l = strings.ReplaceAll(l, "tg_…", e.token)
		if strings.Contains(cmd, "apr_…") {
			if e.pending == "" {
				e.pending, e.lastOp = e.newApproval()
			}
			l = strings.ReplaceAll(l, "apr_…", e.pending)
			if readmeDecides.MatchString(cmd) {
				e.pending = ""
			}
		}
		if strings.Contains(cmd, "op_…") {
			if e.lastOp == "" {
				e.pending, e.lastOp = e.newApproval()
			}
			l = strings.ReplaceAll(l, "op_…", e.lastOp)
		}
		if strings.Contains(cmd, "--public-key KEY") {
			var head struct {
				PublicKey string `json:"public_key"`
			}
			if err := json.Unmarshal([]byte(e.tollgate("audit", "head", "--json")), &head); err != nil || head.PublicKey == "" {
				t.Fatalf("audit head --json: %v", err)
			}
			l = strings.ReplaceAll(l, "--public-key KEY", "--public-key "+head.PublicKey)
		}
		l = strings.ReplaceAll(l, "/etc/tollgate/", filepath.Join(e.dir, "etc", "tollgate")+"/")
		l = strings.ReplaceAll(l, "CLOUDFLARE_ACCOUNT_ID=…", "CLOUDFLARE_ACCOUNT_ID="+e.sbAcct)
		if done, _, _ := strings.Cut(l, "#"); strings.Contains(done, "…") {
			t.Fatalf("README.md:%d: %q has a placeholder the test does not fill; add it to the substitutions", b.line, cmd)
		}
		out = append(out, l)
	}
	return strings.Join(out, "\n") + "\n"
}

// runBlock runs one block as a bash script and requires it to succeed.
func (e *readmeEnv) runBlock(b readmeBlock) {
	t := e.t
	t.Helper()
	script := e.script(b)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-euo", "pipefail", "-c", script)
	cmd.Dir = e.dir
	cmd.Env = append(append([]string{}, e.env...), "TOLLGATE_TOKEN="+e.token, "TOKEN="+e.sbToken)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("README.md:%d failed: %v\nscript:\n%s\noutput:\n%s", b.line, err, script, out)
	}
	if strings.Contains(string(out), "no server has published its console address") {
		t.Errorf("README.md:%d: approvals open found no console address although two HTTP servers run on the database:\n%s", b.line, out)
	}
	t.Logf("script:\n%soutput:\n%s", script, readmeClip(string(out), 3000))
	// What some commands must show besides succeeding.
	var cmds []string
	for _, l := range strings.Split(script, "\n") {
		c, _, _ := strings.Cut(l, "#")
		cmds = append(cmds, c)
	}
	commands := strings.Join(cmds, "\n")
	for _, want := range []struct{ cmd, out string }{
		{"--method tools/list", `"name": "register_domain"`},
		{"approvals approve", "approved by"},
		{"approvals deny", "denied by"},
		{"audit verify", "intact"},
		{"credentials rotate", "rotated Cloudflare parent token"},
		// The console link points at a running server (a stdio server
		// started meanwhile must not withdraw its address).
		{"approvals open", "/console/signin?t="},
	} {
		if strings.Contains(commands, want.cmd) && !strings.Contains(string(out), want.out) {
			t.Errorf("README.md:%d: %q ran, but the output lacks %q:\n%s", b.line, want.cmd, want.out, out)
		}
	}
}

func readmeClip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "\n… (" + strconv.Itoa(len(s)-n) + " more bytes)"
}

// freeAddr is a loopback address nothing listens on right now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// npmVersion is the version in an installed npm package's package.json.
func npmVersion(t *testing.T, dir string) string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dir, "package.json"))
	if err != nil {
		t.Fatalf("%s is not installed: run go tool task setup:npm: %v", dir, err)
	}
	var pkg struct {
		Version string `json:"version"`
	}
	if err := json.Unmarshal(raw, &pkg); err != nil {
		t.Fatal(err)
	}
	return pkg.Version
}

// copyExecutable copies a binary (a hard link when it can).
func copyExecutable(t *testing.T, from, to string) {
	t.Helper()
	if os.Link(from, to) == nil {
		return
	}
	raw, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, raw, 0o755); err != nil {
		t.Fatal(err)
	}
}

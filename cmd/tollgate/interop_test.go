//go:build linux

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/mcp"

	"github.com/tollgatehq/tollgate/tools"
)

// Interop with peers outside this module: the real tollgate binary as a
// child process, driven by the MCP inspector CLI and the MCP conformance
// suite from npm (pinned in the Taskfile's setup:npm, installed into
// .tools/npm), and by the mcp-go client over stdio.

// Pinned npm peers; the Taskfile's setup:npm installs exactly these.
const (
	interopConformanceVersion = "0.1.12"
	interopInspectorVersion   = "1.0.3"
)

// interopWantTools is the public tool inventory, sorted by name.
var interopWantTools = func() []string {
	var names []string
	for _, t := range tools.Inventory() {
		names = append(names, t.Name)
	}
	slices.Sort(names)
	return names
}()

// interopModule is a small ES module Worker.
const interopModule = "export default {\n  async fetch() {\n    return new Response('interop');\n  },\n};\n"

// interopEnv is one temporary tollgate installation: a config, a database
// folder, the binary and the Cerbos binary it uses.
type interopEnv struct {
	t       *testing.T
	root    string
	bin     string
	cerbos  string
	dir     string
	cfgPath string
}

func newInteropEnv(t *testing.T) *interopEnv {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	e := &interopEnv{t: t, root: root, bin: tollgateBinary(t), cerbos: filepath.Join(root, ".tools", "bin", "cerbos"), dir: t.TempDir()}
	if _, err := os.Stat(e.cerbos); err != nil {
		t.Fatalf("the Cerbos binary is missing (run go tool task setup): %v", err)
	}
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	e.cfgPath = filepath.Join(e.dir, "tollgate.yaml")
	cfg := fmt.Sprintf(`db: %s
agent: web-bot
cerbos:
  policies: %s
agents:
  - name: web-bot
    team: web
    roles: [agent, deployer]
    owner: alice
    attributes: {environment: dev, trust_tier: standard}
approvers:
  - name: bob
    os_user: %s
    roles: [approver]
approvals:
  wait: 0s
  expiry: 30m
`, filepath.Join(e.dir, "var", "tollgate.db"), filepath.Join(root, "cerbos-policies"), u.Username)
	if err := os.WriteFile(e.cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return e
}

// env is the child environment: nothing tollgate, Cloudflare or Slack
// inherited from the machine (so the sandbox is used and nothing leaks in),
// then the test's config and Cerbos binary.
func (e *interopEnv) env() []string {
	var out []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "TOLLGATE_") || strings.HasPrefix(k, "CLOUDFLARE_") || strings.HasPrefix(k, "SLACK_") {
			continue
		}
		out = append(out, kv)
	}
	return append(out, "TOLLGATE_CONFIG="+e.cfgPath, "TOLLGATE_CERBOS_BIN="+e.cerbos)
}

// command is the tollgate binary with args, dying with the test.
func (e *interopEnv) command(args ...string) *exec.Cmd {
	cmd := exec.Command(e.bin, args...)
	cmd.Env = e.env()
	cmd.Dir = e.dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd
}

// interopListenRE finds the bound address in serve's connect help on stderr.
var interopListenRE = regexp.MustCompile(`streamable HTTP\s+(http://127\.0\.0\.1:\d+)/mcp`)

// serveHTTP starts `tollgate serve --transport http --auth none --sandbox
// --listen 127.0.0.1:0` and returns its base URL, read from stderr. At
// cleanup it sends SIGTERM and requires a clean exit.
func (e *interopEnv) serveHTTP() string {
	t := e.t
	t.Helper()
	cmd := e.command("serve", "--transport", "http", "--auth", "none", "--sandbox", "--listen", "127.0.0.1:0")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	logs := &interopBuffer{}
	found := make(chan string, 1)
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			logs.WriteString(line + "\n")
			if m := interopListenRE.FindStringSubmatch(line); m != nil {
				select {
				case found <- m[1]:
				default:
				}
			}
		}
	}()
	waited := make(chan error, 1)
	go func() { <-copied; waited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-waited:
			if err != nil {
				t.Errorf("tollgate serve did not exit cleanly on SIGTERM: %v\n%s", err, logs.tail())
			}
		case <-time.After(2 * time.Minute): // a hang guard only
			_ = cmd.Process.Kill()
			t.Errorf("tollgate serve ignored SIGTERM\n%s", logs.tail())
		}
		if t.Failed() {
			t.Logf("tollgate serve stderr (tail):\n%s", logs.tail())
		}
	})
	select {
	case base := <-found:
		return base
	case err := <-waited:
		t.Fatalf("tollgate serve exited before listening: %v\n%s", err, logs.tail())
	case <-time.After(60 * time.Second):
		t.Fatalf("tollgate serve printed no listen address\n%s", logs.tail())
	}
	return ""
}

// interopBuffer collects a child's output from a goroutine.
type interopBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *interopBuffer) WriteString(s string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.b.WriteString(s)
}

func (b *interopBuffer) tail() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.b.String()
	if len(s) > 6000 {
		s = s[len(s)-6000:]
	}
	return s
}

// npmPackage is the folder of an npm peer installed by `go tool task
// setup:npm`. A missing or wrong version fails the test: interop is part of
// the test suite, not optional.
func (e *interopEnv) npmPackage(name, version string) string {
	e.t.Helper()
	dir := filepath.Join(e.root, ".tools", "npm", "node_modules", filepath.FromSlash(name))
	raw, err := os.ReadFile(filepath.Join(dir, "package.json"))
	if err != nil {
		e.t.Fatalf("npm peer %s is not installed in .tools/npm: run `go tool task setup:npm` (go tool task test runs it first): %v", name, err)
	}
	var pkg struct {
		Version string `json:"version"`
	}
	if err := json.Unmarshal(raw, &pkg); err != nil || pkg.Version != version {
		e.t.Fatalf("npm peer %s is %q, want the pinned %s: run `go tool task setup:npm`", name, pkg.Version, version)
	}
	if _, err := exec.LookPath("node"); err != nil {
		e.t.Fatalf("node is not on PATH; the npm interop peers need Node.js 20 or later: %v", err)
	}
	return dir
}

// node runs a Node.js script with a deadline and returns stdout and stderr.
func (e *interopEnv) node(dir string, timeout time.Duration, args ...string) (stdout, stderr string, err error) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "NO_COLOR=1", "FORCE_COLOR=0")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("timed out after %s: %w", timeout, err)
	}
	return out.String(), errb.String(), err
}

// inspector runs the MCP inspector CLI against url and decodes its JSON output.
func (e *interopEnv) inspector(url, transportName string, args ...string) map[string]any {
	e.t.Helper()
	pkg := e.npmPackage("@modelcontextprotocol/inspector-cli", interopInspectorVersion)
	// The CLI finds its own package.json relative to the working directory
	// ("../package.json"), so it is run from its build folder.
	build := filepath.Join(pkg, "build")
	full := append([]string{filepath.Join(build, "cli.js"), "--cli", url, "--transport", transportName}, args...)
	stdout, stderr, err := e.node(build, 60*time.Second, full...)
	if err != nil {
		e.t.Fatalf("inspector %v: %v\nstdout: %s\nstderr: %s", args, err, stdout, stderr)
	}
	var v map[string]any
	if err := json.Unmarshal([]byte(stdout), &v); err != nil {
		e.t.Fatalf("inspector %v printed no JSON: %v\n%s\nstderr: %s", args, err, stdout, stderr)
	}
	return v
}

// interopDig walks a decoded JSON value by keys.
func interopDig(v any, path ...string) any {
	for _, p := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[p]
	}
	return v
}

// TestInspectorCLI drives `tollgate serve` with the MCP inspector CLI (the
// TypeScript SDK client, which validates structured content against each
// tool's output schema with Ajv) over streamable HTTP and SSE.
func TestInspectorCLI(t *testing.T) {
	t.Parallel()
	e := newInteropEnv(t)
	e.npmPackage("@modelcontextprotocol/inspector-cli", interopInspectorVersion) // fail fast, before starting anything
	base := e.serveHTTP()
	for _, tc := range []struct{ transport, path string }{{"http", "/mcp"}, {"sse", "/sse"}} {
		t.Run(tc.transport, func(t *testing.T) {
			e := *e
			e.t = t
			url := base + tc.path

			list := e.inspector(url, tc.transport, "--method", "tools/list")
			var names []string
			tl, _ := list["tools"].([]any)
			for _, x := range tl {
				name, _ := interopDig(x, "name").(string)
				names = append(names, name)
				if interopDig(x, "outputSchema", "type") != "object" || interopDig(x, "inputSchema", "additionalProperties") != false {
					t.Errorf("tool %s: output schema %v, input additionalProperties %v", name, interopDig(x, "outputSchema"), interopDig(x, "inputSchema", "additionalProperties"))
				}
			}
			slices.Sort(names)
			if !slices.Equal(names, interopWantTools) {
				t.Fatalf("inspector tools/list: %v, want %v", names, interopWantTools)
			}

			res := e.inspector(url, tc.transport, "--method", "tools/call", "--tool-name", "check_domain", "--tool-arg", "domain=Inspector-"+tc.transport+".DEV")
			if res["isError"] == true || interopDig(res, "structuredContent", "domain") != "inspector-"+tc.transport+".dev" ||
				interopDig(res, "structuredContent", "registrable") != true ||
				interopDig(res, "structuredContent", "registration_per_year", "micros") != float64(12_180_000) {
				t.Fatalf("inspector check_domain: %v", res)
			}

			res = e.inspector(url, tc.transport, "--method", "tools/call", "--tool-name", "estimate_cost",
				"--tool-arg", "action=register_domain", `--tool-arg`, `params={"domain":"inspector-`+tc.transport+`.dev","years":3}`)
			if res["isError"] == true || interopDig(res, "structuredContent", "amount", "micros") != float64(36_540_000) ||
				interopDig(res, "structuredContent", "approval", "required") != true {
				t.Fatalf("inspector estimate_cost: %v", res)
			}

			res = e.inspector(url, tc.transport, "--method", "tools/call", "--tool-name", "deploy_worker",
				"--tool-arg", "script_name=web-inspector-"+tc.transport, "--tool-arg", "module="+interopModule,
				"--tool-arg", "compatibility_date=2025-01-01", "--tool-arg", "environment=preview",
				"--tool-arg", "reason=preview of the landing page for the interop test")
			if res["isError"] == true || interopDig(res, "structuredContent", "status") != "succeeded" ||
				interopDig(res, "structuredContent", "result", "deployed_name") != "web-inspector-"+tc.transport+"-preview" {
				t.Fatalf("inspector deploy_worker: %v", res)
			}

			res = e.inspector(url, tc.transport, "--method", "tools/call", "--tool-name", "register_domain",
				"--tool-arg", "domain=inspector-"+tc.transport+".dev", "--tool-arg", "reason=landing page for the interop test launch")
			if res["isError"] == true || interopDig(res, "structuredContent", "status") != "awaiting_approval" {
				t.Fatalf("inspector register_domain: %v", res)
			}

			// Bad input is a tool error with a reason, which the CLI prints as a result.
			res = e.inspector(url, tc.transport, "--method", "tools/call", "--tool-name", "check_domain", "--tool-arg", "domain=a..com")
			if res["isError"] != true || !strings.Contains(fmt.Sprint(res["content"]), "domain") {
				t.Fatalf("inspector check_domain a..com: %v", res)
			}
		})
	}
}

// interopMustPass are the conformance scenarios that apply to tollgate (its
// transport, lifecycle, tool listing and DNS-rebinding protection); each
// must pass with no failure or warning. The rest of the suite exercises
// features and fixture tools tollgate does not have, which
// testdata/conformance-baseline.yaml lists with the reason for each.
var interopTimestamp = regexp.MustCompile(`-\d{4}-\d{2}-\d{2}T.*$`)

var interopMustPass = []string{"server-initialize", "ping", "tools-list", "logging-set-level", "resources-list", "server-sse-multiple-streams", "dns-rebinding-protection"}

// TestConformanceSuite runs the MCP conformance suite's server scenarios
// against `tollgate serve`'s streamable HTTP endpoint.
func TestConformanceSuite(t *testing.T) {
	t.Parallel()
	e := newInteropEnv(t)
	pkg := e.npmPackage("@modelcontextprotocol/conformance", interopConformanceVersion)
	base := e.serveHTTP()
	baseline, err := filepath.Abs(filepath.Join("testdata", "conformance-baseline.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	outDir := t.TempDir()
	stdout, stderr, err := e.node(e.dir, 5*time.Minute, filepath.Join(pkg, "dist", "index.js"),
		"server", "--url", base+"/mcp", "--suite", "all", "--expected-failures", baseline, "-o", outDir)
	t.Logf("conformance summary:\n%s", interopSummary(stdout))
	if err != nil {
		t.Fatalf("the conformance suite found failures outside the baseline, or stale baseline entries: %v\n%s\nstderr: %s", err, stdout, stderr)
	}
	if !strings.Contains(stdout, "Baseline check passed") {
		t.Fatalf("no baseline verdict in the conformance output:\n%s", stdout)
	}

	// Read the per-scenario results: the scenarios that apply must pass.
	results := map[string][]interopCheck{}
	dirs, err := os.ReadDir(outDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range dirs {
		raw, err := os.ReadFile(filepath.Join(outDir, d.Name(), "checks.json"))
		if err != nil {
			continue
		}
		var checks []interopCheck
		if err := json.Unmarshal(raw, &checks); err != nil {
			t.Fatalf("%s/checks.json: %v", d.Name(), err)
		}
		// Strip the run's timestamp suffix (-2026-11-22T01-20-…); its
		// minutes may themselves read "-20", so match the whole date.
		name := interopTimestamp.ReplaceAllString(strings.TrimPrefix(d.Name(), "server-"), "")
		results[name] = append(results[name], checks...)
	}
	for _, sc := range interopMustPass {
		checks, ok := results[sc]
		if !ok || len(checks) == 0 {
			t.Errorf("scenario %s did not run (ran: %v)", sc, interopKeys(results))
			continue
		}
		passed := 0
		for _, c := range checks {
			switch c.Status {
			case "SUCCESS":
				passed++
			case "FAILURE", "WARNING":
				t.Errorf("%s: %s %s: %s", sc, c.Name, c.Status, c.ErrorMessage)
			}
		}
		if passed == 0 {
			t.Errorf("%s: no check succeeded: %+v", sc, checks)
		}
	}
}

type interopCheck struct {
	ID           string `json:"id"`
	Name         string `json:"name"`
	Status       string `json:"status"`
	ErrorMessage string `json:"errorMessage"`
}

func interopKeys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// interopSummary is the conformance output from its summary on.
func interopSummary(stdout string) string {
	if i := strings.Index(stdout, "=== SUMMARY ==="); i >= 0 {
		return stdout[i:]
	}
	return stdout
}

// TestStdioBinaryWithMCPGoClient runs `tollgate serve --transport stdio` as
// Claude Desktop does and drives it with the mcp-go stdio client.
func TestStdioBinaryWithMCPGoClient(t *testing.T) {
	t.Parallel()
	e := newInteropEnv(t)
	var stderr interopBuffer
	c, err := client.NewStdioMCPClientWithOptions(e.bin, e.env(), []string{"serve", "--transport", "stdio", "--sandbox"})
	if err != nil {
		t.Fatal(err)
	}
	if r, ok := client.GetStderr(c); ok {
		go func() {
			sc := bufio.NewScanner(r)
			for sc.Scan() {
				stderr.WriteString(sc.Text() + "\n")
			}
		}()
	}
	t.Cleanup(func() {
		_ = c.Close()
		if t.Failed() {
			t.Logf("tollgate serve stderr (tail):\n%s", stderr.tail())
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	init := mcp.InitializeRequest{}
	init.Params.ClientInfo = mcp.Implementation{Name: "tollgate-interop", Version: "1"}
	ir, err := c.Initialize(ctx, init)
	if err != nil {
		t.Fatalf("initialize: %v", err)
	}
	if ir.ServerInfo.Name != "tollgate" {
		t.Errorf("server %+v", ir.ServerInfo)
	}
	lt, err := c.ListTools(ctx, mcp.ListToolsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tl := range lt.Tools {
		names = append(names, tl.Name)
	}
	slices.Sort(names)
	if !slices.Equal(names, interopWantTools) {
		t.Fatalf("tools/list %v", names)
	}
	call := func(name string, args map[string]any) map[string]any {
		t.Helper()
		req := mcp.CallToolRequest{}
		req.Params.Name = name
		req.Params.Arguments = args
		res, err := c.CallTool(ctx, req)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		raw, _ := json.Marshal(res.StructuredContent)
		var v map[string]any
		_ = json.Unmarshal(raw, &v)
		if res.IsError {
			t.Fatalf("%s: tool error %v", name, v)
		}
		return v
	}
	if v := call("check_domain", map[string]any{"domain": "stdio-binary.dev"}); v["registrable"] != true {
		t.Errorf("check_domain %v", v)
	}
	if v := call("estimate_cost", map[string]any{"action": "register_domain", "params": map[string]any{"domain": "stdio-binary.dev"}}); interopDig(v, "amount", "micros") != float64(12_180_000) {
		t.Errorf("estimate_cost %v", v)
	}
	if v := call("deploy_worker", map[string]any{"script_name": "web-stdio", "module": interopModule, "compatibility_date": "2025-01-01", "environment": "preview", "reason": "a preview of the landing page over stdio"}); v["status"] != "succeeded" {
		t.Errorf("deploy_worker %v", v)
	}
	if v := call("register_domain", map[string]any{"domain": "stdio-binary.dev", "reason": "landing page for the stdio interop test"}); v["status"] != "awaiting_approval" {
		t.Errorf("register_domain %v", v)
	}
}

// TestStdioBinaryStdoutIsOnlyProtocol runs the real binary on stdio and
// checks its two streams byte for byte: stdout carries only JSON-RPC
// messages (including the answer to a line that is not JSON), the logs are
// on stderr, and closing stdin ends the process cleanly.
func TestStdioBinaryStdoutIsOnlyProtocol(t *testing.T) {
	t.Parallel()
	e := newInteropEnv(t)
	cmd := e.command("serve", "--transport", "stdio", "--sandbox", "--log-level", "debug")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdoutR, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	requests := []string{
		`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`,
		`{"jsonrpc":"2.0","method":"notifications/initialized"}`,
		`{"jsonrpc":"2.0","id":2,"method":"tools/list"}`,
		`{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"check_domain","arguments":{"domain":"pure-stdout.dev"}}}`,
		`{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"register_domain","arguments":{"domain":"pure-stdout.dev","reason":"checking that stdout stays clean"}}}`,
		`not json at all`,
		`{"jsonrpc":"2.0","id":5,"method":"ping"}`,
	}
	const answers = 6 // ids 1-5 and the parse error
	var lines []string
	readDone := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(stdoutR)
		sc.Buffer(make([]byte, 0, 64*1024), 16*1024*1024)
		for sc.Scan() {
			lines = append(lines, sc.Text())
			if len(lines) == answers {
				// Everything was answered: end the session as a client does.
				_ = stdin.Close()
			}
		}
		readDone <- sc.Err()
	}()
	for _, r := range requests {
		if _, err := io.WriteString(stdin, r+"\n"); err != nil {
			t.Fatalf("write to tollgate's stdin: %v\nstderr: %s", err, stderr.String())
		}
	}
	waited := make(chan error, 1)
	go func() {
		err := <-readDone
		if werr := cmd.Wait(); werr != nil {
			err = errors.Join(err, werr)
		}
		waited <- err
	}()
	select {
	case err := <-waited:
		if err != nil {
			t.Fatalf("tollgate serve --transport stdio: %v\nstderr: %s", err, stderr.String())
		}
	case <-time.After(90 * time.Second):
		_ = cmd.Process.Kill()
		<-waited // the reader is done with lines and stderr once the process is gone
		t.Fatalf("tollgate did not answer and exit; stdout %q\nstderr: %s", lines, stderr.String())
	}

	if len(lines) != answers {
		t.Fatalf("%d lines on stdout, want %d answers: %q", len(lines), answers, lines)
	}
	seen := map[string]bool{}
	for i, l := range lines {
		var m struct {
			JSONRPC string          `json:"jsonrpc"`
			ID      json.RawMessage `json:"id"`
			Result  json.RawMessage `json:"result"`
			Error   *struct {
				Code int `json:"code"`
			} `json:"error"`
		}
		if err := json.Unmarshal([]byte(l), &m); err != nil || m.JSONRPC != "2.0" || (m.Result == nil && m.Error == nil) {
			t.Fatalf("stdout line %d is not a JSON-RPC 2.0 response: %q", i+1, l)
		}
		seen[string(m.ID)] = true
		if string(m.ID) == "null" && (m.Error == nil || m.Error.Code != -32700) {
			t.Errorf("the non-JSON line should get a parse error: %q", l)
		}
	}
	for _, id := range []string{"1", "2", "3", "4", "5", "null"} {
		if !seen[id] {
			t.Errorf("no answer with id %s on stdout: %q", id, lines)
		}
	}
	logs := stderr.String()
	for _, want := range []string{"level=INFO", "serving MCP on stdio", "using the built-in Cloudflare sandbox", "level=DEBUG"} {
		if !strings.Contains(logs, want) {
			t.Errorf("stderr has no %q; the logs belong there:\n%s", want, logs)
		}
	}
}

// TestServeRefusesAnOpenListener: the binary will not serve a non-loopback
// address without agent tokens or TLS, and says what to do instead.
func TestServeRefusesAnOpenListener(t *testing.T) {
	t.Parallel()
	e := newInteropEnv(t)
	cmd := e.command("serve", "--transport", "http", "--auth", "none", "--sandbox", "--listen", "0.0.0.0:0")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("serve on 0.0.0.0 with --auth none: %v (want exit status 1)\n%s", err, stderr.String())
	}
	for _, want := range []string{`listen "0.0.0.0:0" is not loopback`, "--auth tokens", "--tls-cert"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr does not say %q:\n%s", want, stderr.String())
		}
	}
	if strings.Contains(stderr.String(), "is serving MCP") {
		t.Error("it served anyway")
	}
}

// Command tollgate is an MCP server that gives LLM agents guarded access to
// Cloudflare: typed tools, Cerbos policy, hard budgets, human approval in
// Slack for anything irreversible, per-operation tokens and a tamper-evident
// audit trail. Run `tollgate help` for the subcommands.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/tollgatehq/tollgate/approvals/display"
)

// Set by -ldflags in the Taskfile.
var (
	version = "dev"
	commit  = "none"
	date    = "unknown"
)

type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, out io.Writer) error
}

func commands() []command {
	return []command{
		{"serve", "run the MCP server (stdio, streamable HTTP or SSE)", runServe},
		{"demo", "run a narrated end-to-end session against the sandbox", runDemo},
		{"sandbox", "run the Cloudflare API emulator on its own", runSandbox},
		{"approvals", "list, show, approve or deny approval requests (local approver); open the web console", runApprovals},
		{"mandates", "create, list or revoke standing approvals (an agent, an action, a resource pattern, a count, amounts, an expiry)", runMandates},
		{"budget", "set, list or show budgets", runBudget},
		{"spend", "show what was spent and is held, by agent, team or day (with or without budgets)", runSpend},
		{"limit", "set, list or delete velocity limits", runLimit},
		{"agents", "create, list, rotate or revoke agent bearer tokens", runAgents},
		{"credentials", "rotate the Cloudflare parent token, or show its age, expiry and permissions", runCredentials},
		{"audit", "verify, sign (head), export or show the keyed audit trail", runAudit},
		{"freeze", "stop an agent, a team or everything from spending (freeze list shows them)", runFreeze},
		{"unfreeze", "lift a freeze", runUnfreeze},
		{"load", "drive a server over streamable HTTP and report calls/s and latency", runLoad},
		{"version", "print version, commit and build date", runVersion},
	}
}

func main() {
	// The signals stay caught until the process exits: a SIGTERM arriving
	// after a clean shutdown (an MCP client that closed stdin and then
	// signals, as mcp-go's does after 2 s) must not turn exit 0 into a kill.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	stopProfile := startCPUProfile(os.Getenv(cpuProfileEnv))
	// The heap profile is taken when the signal to stop arrives, before the
	// shutdown releases what the run built up.
	heapDone := make(chan struct{})
	if path := os.Getenv(memProfileEnv); path != "" {
		go func() {
			defer close(heapDone)
			<-ctx.Done()
			writeHeapProfile(path)
		}()
	} else {
		close(heapDone)
	}
	err := dispatch(ctx, os.Args[1:], os.Stdout)
	stopProfile()
	if ctx.Err() != nil {
		<-heapDone
	}
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		// Errors can quote what an agent or a client wrote: one clean line.
		msg := display.Text(err.Error(), 4000)
		var ue usageError
		if errors.As(err, &ue) {
			fmt.Fprintln(os.Stderr, "tollgate:", msg)
			os.Exit(2)
		}
		fmt.Fprintln(os.Stderr, "tollgate:", msg)
		os.Exit(1)
	}
}

func dispatch(ctx context.Context, args []string, out io.Writer) error {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage(out)
		return nil
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return c.run(ctx, args[1:], out)
		}
	}
	usage(os.Stderr)
	return usageError{fmt.Sprintf("unknown command %q", args[0])}
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "tollgate: guarded Cloudflare provisioning for LLM agents, over MCP")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Usage: tollgate <command> [flags]   (tollgate <command> --help for its flags)")
	fmt.Fprintln(w)
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
}

type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func runVersion(_ context.Context, args []string, out io.Writer) error {
	fs := newFlagSet("version", "print version, commit and build date")
	asJSON := fs.Bool("json", false, "print as JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *asJSON {
		return printJSON(out, map[string]string{"version": version, "commit": commit, "date": date})
	}
	fmt.Fprintf(out, "tollgate %s (commit %s, built %s)\n", version, commit, date)
	return nil
}

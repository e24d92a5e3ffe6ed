package tools

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tollgatehq/tollgate/cloudflare"
	"github.com/tollgatehq/tollgate/ledger/money"
)

// A gradual rollout moves a production Worker's traffic to a new version
// step by step. Bounds on what a call may ask for:
const (
	maxRolloutSteps    = 10
	minRolloutInterval = 5 * time.Second
	maxRolloutInterval = 24 * time.Hour
)

// RolloutArgs is deploy_worker's rollout argument.
type RolloutArgs struct {
	Steps    []int  `json:"steps" jsonschema:"percentages of traffic on the new version, increasing, each 1 to 100, ending at 100, e.g. [10, 50, 100]"`
	Interval string `json:"interval" jsonschema:"time between steps as a Go duration, 5s to 24h, e.g. 5m"`
}

// rolloutPlan is a normalised rollout, part of the arguments an Operation
// (and its approval) is bound to.
type rolloutPlan struct {
	Steps           []int `json:"steps"`
	IntervalSeconds int64 `json:"interval_seconds"`
}

func (r rolloutPlan) interval() time.Duration {
	return time.Duration(r.IntervalSeconds) * time.Second
}

// String is the rollout as an approver reads it: "10% → 50% → 100%, every 5m0s".
func (r rolloutPlan) String() string {
	parts := make([]string, len(r.Steps))
	for i, s := range r.Steps {
		parts[i] = strconv.Itoa(s) + "%"
	}
	return strings.Join(parts, " → ") + ", every " + r.interval().String()
}

// checkRollout validates a rollout argument, reporting every problem.
func checkRollout(r *RolloutArgs, env string) (*rolloutPlan, InputErrors) {
	if r == nil {
		return nil, nil
	}
	var errs InputErrors
	if env != "production" {
		errs = append(errs, inputErr("rollout", "a rollout only with environment production (previews take all traffic at once)", "given with environment %q", truncate(env, 40)))
	}
	const stepsAllowed = "1 to 10 whole percentages, strictly increasing, each 1 to 100, the last 100, e.g. [10, 50, 100]"
	switch {
	case len(r.Steps) == 0 || len(r.Steps) > maxRolloutSteps:
		errs = append(errs, inputErr("rollout.steps", stepsAllowed, "%d steps", len(r.Steps)))
	case r.Steps[len(r.Steps)-1] != 100:
		errs = append(errs, inputErr("rollout.steps", stepsAllowed, "the last step is %d%%, not 100%%", r.Steps[len(r.Steps)-1]))
	}
	for i, s := range r.Steps {
		if s < 1 || s > 100 {
			errs = append(errs, inputErr("rollout.steps", stepsAllowed, "step %d is %d%%", i+1, s))
		} else if i > 0 && s <= r.Steps[i-1] {
			errs = append(errs, inputErr("rollout.steps", stepsAllowed, "step %d (%d%%) does not increase on step %d (%d%%)", i+1, s, i, r.Steps[i-1]))
		}
	}
	const intervalAllowed = "a duration from 5s to 24h such as 30s, 5m or 1h, whole seconds"
	d, err := time.ParseDuration(r.Interval)
	switch {
	case err != nil:
		errs = append(errs, inputErr("rollout.interval", intervalAllowed, "%q is not a duration", truncate(r.Interval, 40)))
	case d < minRolloutInterval || d > maxRolloutInterval:
		errs = append(errs, inputErr("rollout.interval", intervalAllowed, "%s is out of range", d))
	case d%time.Second != 0:
		errs = append(errs, inputErr("rollout.interval", intervalAllowed, "%s is not whole seconds", d))
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return &rolloutPlan{Steps: slices.Clone(r.Steps), IntervalSeconds: int64(d / time.Second)}, nil
}

// Rollout is where a gradual rollout stands: the pipeline moves it step by
// step, each step under a token of its own, and records every step in the
// Operation's story.
type Rollout struct {
	Script   string        // the Worker, as deployed
	Previous string        // the version serving before; every rollback returns here
	Version  string        // the new version
	Steps    []int         // percentages on Version
	Done     int           // how many steps are in force
	Interval time.Duration // between steps
	Tag      string        // the Operation's id, marking its deployments
}

// Finished reports whether every step is in force.
func (r *Rollout) Finished() bool { return r.Done >= len(r.Steps) }

// Percent is the share of traffic on the new version now.
func (r *Rollout) Percent() int {
	if r.Done == 0 {
		return 0
	}
	return r.Steps[r.Done-1]
}

func (r *Rollout) message(what string) string {
	return "tollgate " + r.Tag + ": " + what
}

// Step puts the next step in force.
func (r *Rollout) Step(ctx context.Context, s *cloudflare.Session) (*cloudflare.ScriptDeployment, error) {
	pct := r.Steps[r.Done]
	d, err := s.RolloutStep(ctx, r.Script, r.Previous, r.Version, pct, r.message(fmt.Sprintf("step %d of %d, %d%%", r.Done+1, len(r.Steps), pct)))
	if err != nil {
		return nil, err
	}
	r.Done++
	return d, nil
}

// Rollback returns all traffic to the previous version.
func (r *Rollout) Rollback(ctx context.Context, s *cloudflare.Session, why string) (*cloudflare.ScriptDeployment, error) {
	return s.Rollback(ctx, r.Script, r.Previous, r.message("rolled back: "+why))
}

// InForce reports whether the live deployment is the split this rollout
// put there last: when it is not, something else (a rollback) moved the
// traffic, and the rollout must not go on.
func (r *Rollout) InForce(live cloudflare.ScriptDeployment) bool {
	want := map[string]float64{r.Version: float64(r.Percent())}
	if r.Percent() < 100 {
		want[r.Previous] = float64(100 - r.Percent())
	}
	got := map[string]float64{}
	for _, t := range live.Traffic {
		if t.Percentage > 0 {
			got[t.VersionID] = t.Percentage
		}
	}
	if len(got) != len(want) {
		return false
	}
	for id, p := range want {
		if got[id] != p {
			return false
		}
	}
	return true
}

// RollingOut is a Mutation whose execution may leave a gradual rollout
// (Outcome.Rollout) for the pipeline to move on step by step.
type RollingOut interface {
	// RolloutOutcome is the Outcome of the rollout r of the stored
	// arguments args, finished or stopped (rolledBack says why).
	RolloutOutcome(args json.RawMessage, r *Rollout, charged money.Money, rolledBack string) Outcome
}

var _ RollingOut = deployWorker{}

// RolloutResult is a finished or stopped rollout in a deploy's result.
type RolloutResult struct {
	Steps      []int  `json:"steps"`
	Done       int    `json:"done" jsonschema:"how many steps were put in force"`
	Version    string `json:"version" jsonschema:"the new version"`
	Previous   string `json:"previous" jsonschema:"the version that served before"`
	RolledBack string `json:"rolled_back,omitempty" jsonschema:"why all traffic went back to the previous version"`
}

// RolloutResult describes r for a result.
func (r *Rollout) Result(rolledBack string) *RolloutResult {
	return &RolloutResult{Steps: slices.Clone(r.Steps), Done: r.Done, Version: r.Version, Previous: r.Previous, RolledBack: rolledBack}
}

// liveVersions reads a Worker's deployment in force and, from the
// deployment history, the version that served before the newest one
// (what a rollback returns to): in a split, the older version of the two;
// otherwise the last version other than the live one that had all traffic.
func liveVersions(deps []cloudflare.ScriptDeployment, numbers map[string]int) (live cloudflare.ScriptDeployment, newest, previous string) {
	if len(deps) == 0 {
		return live, "", ""
	}
	live = deps[0]
	var shares []cloudflare.TrafficShare
	for _, t := range live.Traffic {
		if t.Percentage > 0 {
			shares = append(shares, t)
		}
	}
	if len(shares) == 2 {
		a, b := shares[0].VersionID, shares[1].VersionID
		if numbers[a] < numbers[b] {
			return live, b, a
		}
		return live, a, b
	}
	if len(shares) == 1 {
		newest = shares[0].VersionID
	}
	for _, d := range deps[1:] {
		for _, t := range d.Traffic {
			if t.Percentage == 100 && t.VersionID != newest {
				return live, newest, t.VersionID
			}
		}
	}
	return live, newest, ""
}

// versionNumbers maps a Worker's version ids to their numbers.
func versionNumbers(vs []cloudflare.Version) map[string]int {
	out := make(map[string]int, len(vs))
	for _, v := range vs {
		out[v.ID] = v.Number
	}
	return out
}

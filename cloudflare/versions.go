package cloudflare

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"time"

	"github.com/cloudflare/cloudflare-go/v6/workers"
)

// VersionParams is one Worker version upload: the new code, not yet
// serving any traffic.
type VersionParams struct {
	ScriptName        string
	Module            []byte // ES module source
	ModuleName        string // default "worker.js"
	CompatibilityDate string // YYYY-MM-DD
	// Tag (at most 100 bytes) labels the version so it can be found again,
	// e.g. by the operation that uploaded it when the answer was lost.
	Tag string
	// Message (at most 1000 bytes) says why, for humans.
	Message string
}

// Version is one uploaded version of a Worker.
type Version struct {
	ID        string
	Number    int
	CreatedOn time.Time
	Tag       string
	Message   string
}

// checkModule validates what a script or version upload carries.
func checkModule(name string, module []byte, moduleName, date string) error {
	var errs []error
	if !scriptNameRE.MatchString(name) {
		errs = append(errs, fmt.Errorf("script name %q: want 1 to 63 lowercase letters, digits, '-' or '_', not starting with '-'", name))
	}
	if len(module) == 0 {
		errs = append(errs, errors.New("module: empty; pass the ES module source"))
	}
	if !moduleNameRE.MatchString(moduleName) {
		errs = append(errs, fmt.Errorf("module name %q: want a file name such as worker.js", moduleName))
	}
	if _, err := time.Parse(time.DateOnly, date); err != nil || !dateRE.MatchString(date) {
		errs = append(errs, fmt.Errorf("compatibility date %q: want YYYY-MM-DD", date))
	}
	return errors.Join(errs...)
}

// UploadVersion uploads a new version of an existing Worker without
// deploying it (POST scripts/{name}/versions). The upload is retried only
// on a 429; a 5xx or transport failure wraps ErrInDoubt (reconcile with
// Versions and the Tag). Needs Workers Scripts Write.
func (s *Session) UploadVersion(ctx context.Context, p VersionParams) (*Version, error) {
	const op = "upload version"
	if err := s.ready(op, needWorkersWrite); err != nil {
		return nil, err
	}
	if p.ModuleName == "" {
		p.ModuleName = "worker.js"
	}
	err := checkModule(p.ScriptName, p.Module, p.ModuleName, p.CompatibilityDate)
	if len(p.Tag) > 100 || len(p.Message) > 1000 {
		err = errors.Join(err, errors.New("tag is at most 100 bytes and message at most 1000"))
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	var res *workers.ScriptVersionNewResponse
	err = s.b.mutate(ctx, func(ctx context.Context) error {
		var params workers.ScriptVersionNewParams
		params.AccountID.Value, params.AccountID.Present = s.accountID(), true
		var meta workers.ScriptVersionNewParamsMetadata
		meta.MainModule.Value, meta.MainModule.Present = p.ModuleName, true
		meta.CompatibilityDate.Value, meta.CompatibilityDate.Present = p.CompatibilityDate, true
		if p.Tag != "" || p.Message != "" {
			var ann workers.ScriptVersionNewParamsMetadataAnnotations
			if p.Tag != "" {
				ann.WorkersTag.Value, ann.WorkersTag.Present = p.Tag, true
			}
			if p.Message != "" {
				ann.WorkersMessage.Value, ann.WorkersMessage.Present = p.Message, true
			}
			meta.Annotations.Value, meta.Annotations.Present = ann, true
		}
		params.Metadata.Value, params.Metadata.Present = meta, true
		params.Files.Value = []io.Reader{&modulePart{Reader: bytes.NewReader(p.Module), name: p.ModuleName}}
		params.Files.Present = true
		var err error
		res, err = workers.NewScriptVersionService(s.opts()...).New(ctx, p.ScriptName, params)
		return err
	})
	if err != nil {
		if ambiguous(err) {
			return nil, fmt.Errorf("%s %s: %w: %w", op, p.ScriptName, ErrInDoubt, err)
		}
		return nil, fmt.Errorf("%s %s: %w", op, p.ScriptName, err)
	}
	if res.ID == "" {
		return nil, fmt.Errorf("%s %s: the answer has no version id", op, p.ScriptName)
	}
	v := &Version{ID: res.ID, Number: int(res.Number), CreatedOn: parseTime(res.Metadata.CreatedOn)}
	v.Tag, v.Message = annotations(res.JSON.ExtraFields["annotations"].Raw())
	return v, nil
}

// annotations reads a version's workers/tag and workers/message: Cloudflare
// returns them beside the metadata, a field cloudflare-go does not model.
func annotations(raw string) (tag, message string) {
	var a map[string]string
	if raw == "" || json.Unmarshal([]byte(raw), &a) != nil {
		return "", ""
	}
	return a["workers/tag"], a["workers/message"]
}

func parseTime(s string) time.Time {
	t, _ := time.Parse(time.RFC3339Nano, s)
	return t
}

// Versions lists a Worker's versions, newest first (every page).
// errors.Is(err, ErrNotFound) when there is no such Worker. Needs Workers
// Scripts Read (or Write).
func (s *Session) Versions(ctx context.Context, script string) ([]Version, error) {
	const op = "list versions"
	if err := s.ready(op, needWorkersRead); err != nil {
		return nil, err
	}
	if !scriptNameRE.MatchString(script) {
		return nil, fmt.Errorf("%s: script name %q: want 1 to 63 lowercase letters, digits, '-' or '_'", op, script)
	}
	const perPage = 100
	var out []Version
	for page := 1; ; page++ {
		var items []workers.ScriptVersionListResponse
		err := s.b.read(ctx, func(ctx context.Context) error {
			var q workers.ScriptVersionListParams
			q.AccountID.Value, q.AccountID.Present = s.accountID(), true
			q.Page.Value, q.Page.Present = int64(page), true
			q.PerPage.Value, q.PerPage.Present = perPage, true
			res, err := workers.NewScriptVersionService(s.opts()...).List(ctx, script, q)
			if err != nil {
				return err
			}
			items = res.Result.Items
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", op, script, err)
		}
		for _, it := range items {
			v := Version{ID: it.ID, Number: int(it.Number), CreatedOn: parseTime(it.Metadata.CreatedOn)}
			v.Tag, v.Message = annotations(it.JSON.ExtraFields["annotations"].Raw())
			out = append(out, v)
		}
		if len(items) < perPage {
			return out, nil
		}
	}
}

// TrafficShare is one version's share of a Worker's traffic, in percent.
type TrafficShare struct {
	VersionID  string
	Percentage float64
}

// ScriptDeployment is one traffic split of a Worker; the newest is in force.
type ScriptDeployment struct {
	ID        string
	CreatedOn time.Time
	Traffic   []TrafficShare
	Message   string
}

// checkTraffic is Cloudflare's rule for a deployment: one or two distinct
// versions, 0 to 100 % each, 100 % in all.
func checkTraffic(traffic []TrafficShare) error {
	if len(traffic) < 1 || len(traffic) > 2 {
		return fmt.Errorf("traffic: %d versions; a deployment splits traffic across one or two", len(traffic))
	}
	sum := 0.0
	for i, t := range traffic {
		if t.VersionID == "" {
			return fmt.Errorf("traffic[%d]: the version id is empty", i)
		}
		if math.IsNaN(t.Percentage) || t.Percentage < 0 || t.Percentage > 100 {
			return fmt.Errorf("traffic[%d]: %v %%; allowed 0 to 100", i, t.Percentage)
		}
		sum += t.Percentage
	}
	if len(traffic) == 2 && traffic[0].VersionID == traffic[1].VersionID {
		return fmt.Errorf("traffic: version %s is listed twice", traffic[0].VersionID)
	}
	if math.Abs(sum-100) > 1e-6 {
		return fmt.Errorf("traffic: the shares add up to %v %%; they must add up to 100", sum)
	}
	return nil
}

// Deploy puts a traffic split in force (POST scripts/{name}/deployments,
// strategy percentage). A deployment is idempotent in effect but is still
// sent once (retried on a 429 only); a 5xx or transport failure wraps
// ErrInDoubt (reconcile with Deployments). Needs Workers Scripts Write.
func (s *Session) Deploy(ctx context.Context, script string, traffic []TrafficShare, message string) (*ScriptDeployment, error) {
	const op = "deploy versions"
	if err := s.ready(op, needWorkersWrite); err != nil {
		return nil, err
	}
	err := checkTraffic(traffic)
	if !scriptNameRE.MatchString(script) {
		err = errors.Join(err, fmt.Errorf("script name %q: want 1 to 63 lowercase letters, digits, '-' or '_'", script))
	}
	if len(message) > 1000 {
		err = errors.Join(err, errors.New("message: at most 1000 bytes"))
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	var res *workers.Deployment
	err = s.b.mutate(ctx, func(ctx context.Context) error {
		var params workers.ScriptDeploymentNewParams
		params.AccountID.Value, params.AccountID.Present = s.accountID(), true
		params.Deployment.Strategy.Value, params.Deployment.Strategy.Present = workers.DeploymentStrategyPercentage, true
		versions := make([]workers.DeploymentVersionParam, len(traffic))
		for i, t := range traffic {
			versions[i].VersionID.Value, versions[i].VersionID.Present = t.VersionID, true
			versions[i].Percentage.Value, versions[i].Percentage.Present = t.Percentage, true
		}
		params.Deployment.Versions.Value, params.Deployment.Versions.Present = versions, true
		if message != "" {
			var ann workers.DeploymentAnnotationsParam
			ann.WorkersMessage.Value, ann.WorkersMessage.Present = message, true
			params.Deployment.Annotations.Value, params.Deployment.Annotations.Present = ann, true
		}
		var err error
		res, err = workers.NewScriptDeploymentService(s.opts()...).New(ctx, script, params)
		return err
	})
	if err != nil {
		if ambiguous(err) {
			return nil, fmt.Errorf("%s %s: %w: %w", op, script, ErrInDoubt, err)
		}
		return nil, fmt.Errorf("%s %s: %w", op, script, err)
	}
	d := deploymentOf(*res)
	return &d, nil
}

// RolloutStep sends percent of a Worker's traffic to version next and the
// rest to version prev (all of it to next at 100). Needs Workers Scripts
// Write.
func (s *Session) RolloutStep(ctx context.Context, script, prev, next string, percent int, message string) (*ScriptDeployment, error) {
	if percent < 1 || percent > 100 {
		return nil, fmt.Errorf("rollout step %s: %d %%; allowed 1 to 100", script, percent)
	}
	traffic := []TrafficShare{{VersionID: next, Percentage: float64(percent)}}
	if percent < 100 {
		traffic = append(traffic, TrafficShare{VersionID: prev, Percentage: float64(100 - percent)})
	}
	return s.Deploy(ctx, script, traffic, message)
}

// Rollback sends all of a Worker's traffic to version (the one that served
// before a rollout). Needs Workers Scripts Write.
func (s *Session) Rollback(ctx context.Context, script, version, message string) (*ScriptDeployment, error) {
	return s.Deploy(ctx, script, []TrafficShare{{VersionID: version, Percentage: 100}}, message)
}

// Deployments lists a Worker's deployments, newest (in force) first.
// errors.Is(err, ErrNotFound) when there is no such Worker. Needs Workers
// Scripts Read (or Write).
func (s *Session) Deployments(ctx context.Context, script string) ([]ScriptDeployment, error) {
	const op = "list deployments"
	if err := s.ready(op, needWorkersRead); err != nil {
		return nil, err
	}
	if !scriptNameRE.MatchString(script) {
		return nil, fmt.Errorf("%s: script name %q: want 1 to 63 lowercase letters, digits, '-' or '_'", op, script)
	}
	var res *workers.ScriptDeploymentListResponse
	err := s.b.read(ctx, func(ctx context.Context) error {
		var q workers.ScriptDeploymentListParams
		q.AccountID.Value, q.AccountID.Present = s.accountID(), true
		var err error
		res, err = workers.NewScriptDeploymentService(s.opts()...).List(ctx, script, q)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", op, script, err)
	}
	out := make([]ScriptDeployment, 0, len(res.Deployments))
	for _, d := range res.Deployments {
		out = append(out, deploymentOf(d))
	}
	return out, nil
}

func deploymentOf(d workers.Deployment) ScriptDeployment {
	out := ScriptDeployment{ID: d.ID, CreatedOn: d.CreatedOn, Message: d.Annotations.WorkersMessage}
	for _, v := range d.Versions {
		out.Traffic = append(out.Traffic, TrafficShare{VersionID: v.VersionID, Percentage: v.Percentage})
	}
	return out
}

// WorkerSummary is a Worker as the scripts list describes it.
type WorkerSummary struct {
	Name       string
	Etag       string
	CreatedOn  time.Time
	ModifiedOn time.Time
}

// ListWorkers lists the account's Workers. Needs Workers Scripts Read (or
// Write).
func (s *Session) ListWorkers(ctx context.Context) ([]WorkerSummary, error) {
	const op = "list workers"
	if err := s.ready(op, needWorkersRead); err != nil {
		return nil, err
	}
	var list []workers.ScriptListResponse
	err := s.b.read(ctx, func(ctx context.Context) error {
		var q workers.ScriptListParams
		q.AccountID.Value, q.AccountID.Present = s.accountID(), true
		page, err := workers.NewScriptService(s.opts()...).List(ctx, q)
		if err != nil {
			return err
		}
		list = page.Result
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	out := make([]WorkerSummary, 0, len(list))
	for _, sc := range list {
		out = append(out, WorkerSummary{Name: sc.ID, Etag: sc.Etag, CreatedOn: sc.CreatedOn, ModifiedOn: sc.ModifiedOn})
	}
	return out, nil
}

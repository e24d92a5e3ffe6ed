package sandbox

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"time"
)

// How much history a script keeps: older versions (unless the deployment
// in force uses them) and deployments are dropped, as Cloudflare keeps a
// bounded history too.
const (
	maxVersionsKept    = 20
	maxDeploymentsKept = 20
	maxAnnotationBytes = 1000
)

// What made a version or a deployment (annotations workers/triggered_by).
const (
	triggeredByUpload     = "upload"         // a script PUT: a version deployed at once
	triggeredByVersion    = "version_upload" // a version uploaded without deploying it
	triggeredByDeployment = "deployment"     // a deployment created on its own
)

// deployment is the deployment in force (the newest), nil if none.
func (sc *scriptRec) deployment() *deploymentRec {
	if len(sc.Deployments) == 0 {
		return nil
	}
	return sc.Deployments[len(sc.Deployments)-1]
}

// version returns the version with that id, nil if none.
func (sc *scriptRec) version(id string) *versionRec {
	for _, v := range sc.Versions {
		if v.ID == id {
			return v
		}
	}
	return nil
}

// current is the version serving the largest share of the traffic (the
// newer one on a tie): what the script's content, etag and entry point
// describe. A script always has at least one version.
func (sc *scriptRec) current() *versionRec {
	var best *versionRec
	bestPct := -1.0
	if d := sc.deployment(); d != nil {
		for _, sh := range d.Versions {
			v := sc.version(sh.VersionID)
			if v != nil && (sh.Percentage > bestPct || sh.Percentage == bestPct && v.Number > best.Number) {
				best, bestPct = v, sh.Percentage
			}
		}
	}
	if best == nil {
		best = sc.Versions[len(sc.Versions)-1]
	}
	return best
}

// addVersion numbers v and keeps it, dropping the oldest versions no
// deployment in force uses.
func (sc *scriptRec) addVersion(v *versionRec) {
	sc.LastNumber++
	v.Number = sc.LastNumber
	sc.Versions = append(sc.Versions, v)
	sc.ModifiedOn = v.CreatedOn
	for len(sc.Versions) > maxVersionsKept {
		inUse := map[string]bool{}
		if d := sc.deployment(); d != nil {
			for _, sh := range d.Versions {
				inUse[sh.VersionID] = true
			}
		}
		dropped := false
		for i, old := range sc.Versions {
			if !inUse[old.ID] && old != v {
				sc.Versions = append(sc.Versions[:i:i], sc.Versions[i+1:]...)
				dropped = true
				break
			}
		}
		if !dropped {
			return
		}
	}
}

// addDeployment puts d in force.
func (sc *scriptRec) addDeployment(d *deploymentRec) {
	sc.Deployments = append(sc.Deployments, d)
	if n := len(sc.Deployments); n > maxDeploymentsKept {
		sc.Deployments = append([]*deploymentRec(nil), sc.Deployments[n-maxDeploymentsKept:]...)
	}
	sc.ModifiedOn = d.CreatedOn
}

func newDeployment(now time.Time, triggeredBy, message string, shares []shareRec) (*deploymentRec, error) {
	id, err := newUUID()
	if err != nil {
		return nil, err
	}
	return &deploymentRec{
		ID: id, CreatedOn: now, Source: "api", Strategy: "percentage", Versions: shares,
		Message: message, TriggeredBy: triggeredBy,
	}, nil
}

func (v *versionRec) annotations() map[string]any {
	a := map[string]any{"workers/triggered_by": v.TriggeredBy}
	if v.Tag != "" {
		a["workers/tag"] = v.Tag
	}
	if v.Message != "" {
		a["workers/message"] = v.Message
	}
	return a
}

// listJSON is a version as the versions list shows it.
func (v *versionRec) listJSON() map[string]any {
	return map[string]any{
		"id":     v.ID,
		"number": v.Number,
		"metadata": map[string]any{
			"author_email": authorEmail,
			"author_id":    accountID,
			"created_on":   v.CreatedOn.Format(time.RFC3339Nano),
			"modified_on":  v.CreatedOn.Format(time.RFC3339Nano),
			"hasPreview":   false,
			"source":       v.Source,
		},
		// Cloudflare returns the upload's annotations beside the metadata;
		// cloudflare-go keeps them among the unmodelled fields.
		"annotations": v.annotations(),
	}
}

// json is a version with its resources, as upload and get answer it.
func (v *versionRec) json() map[string]any {
	out := v.listJSON()
	out["resources"] = map[string]any{
		"bindings": []any{},
		"script": map[string]any{
			"etag": v.Etag, "handlers": v.handlers(), "last_deployed_from": "api", "named_handlers": []any{},
		},
		"script_runtime": map[string]any{
			"compatibility_date": v.CompatibilityDate, "compatibility_flags": []string{},
			"limits": map[string]any{"cpu_ms": 50}, "usage_model": "standard",
		},
	}
	return out
}

func (d *deploymentRec) json() map[string]any {
	versions := make([]map[string]any, 0, len(d.Versions))
	for _, sh := range d.Versions {
		versions = append(versions, map[string]any{"version_id": sh.VersionID, "percentage": sh.Percentage})
	}
	ann := map[string]any{"workers/triggered_by": d.TriggeredBy}
	if d.Message != "" {
		ann["workers/message"] = d.Message
	}
	return map[string]any{
		"id":           d.ID,
		"created_on":   d.CreatedOn.Format(time.RFC3339Nano),
		"source":       d.Source,
		"strategy":     d.Strategy,
		"versions":     versions,
		"annotations":  ann,
		"author_email": authorEmail,
	}
}

// handleUploadVersion uploads a version without deploying it (POST
// scripts/{name}/versions). The Worker must exist and use module syntax.
func (s *Sandbox) handleUploadVersion(w http.ResponseWriter, r *http.Request, _ *tokenRec) {
	name := r.PathValue("script")
	body, ok := readBody(w, r)
	if !ok {
		return
	}
	now := s.clock().UTC()
	v, err := uploadVersion(name, r, body, now, triggeredByVersion)
	if err == nil && (len(v.Tag) > 100 || len(v.Message) > maxAnnotationBytes) {
		err = failf(http.StatusBadRequest, codeScriptInvalid, "metadata.annotations: workers/tag is at most 100 bytes and workers/message at most %d", maxAnnotationBytes)
	}
	if err != nil {
		s.writeErr(w, err)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	err = s.commitScriptLocked(name, func(_ *state, sc *scriptRec) error {
		sc.addVersion(v)
		return nil
	})
	if err != nil {
		s.writeErr(w, err)
		return
	}
	res := v.json()
	res["startup_time_ms"] = 0
	writeResult(w, http.StatusOK, res)
}

func (s *Sandbox) handleListVersions(w http.ResponseWriter, r *http.Request, _ *tokenRec) {
	name := r.PathValue("script")
	q := r.URL.Query()
	page, err := queryInt(q.Get("page"), 1, 1, 1_000_000)
	if err != nil {
		writeError(w, http.StatusBadRequest, codeScriptInvalid, "page: "+err.Error())
		return
	}
	perPage, err := queryInt(q.Get("per_page"), 10, 1, 100)
	if err != nil {
		writeError(w, http.StatusBadRequest, codeScriptInvalid, "per_page: "+err.Error())
		return
	}
	deployable := false
	if d := q.Get("deployable"); d != "" {
		if deployable, err = strconv.ParseBool(d); err != nil {
			writeError(w, http.StatusBadRequest, codeScriptInvalid, fmt.Sprintf("deployable: got %q; true or false", d))
			return
		}
	}
	s.mu.Lock()
	sc := s.st.Scripts[name]
	items := []map[string]any{}
	total := 0
	if sc != nil {
		total = len(sc.Versions)
		// Newest first; deployable ignores pagination, as documented.
		first, last := 0, total
		if !deployable {
			first, last = min((page-1)*perPage, total), min(page*perPage, total)
		}
		for i := first; i < last; i++ {
			items = append(items, sc.Versions[total-1-i].listJSON())
		}
	}
	s.mu.Unlock()
	if sc == nil {
		writeError(w, http.StatusNotFound, codeWorkerNotFound, msgWorkerNotFound)
		return
	}
	writeJSON(w, http.StatusOK, envelope{Success: true, Result: map[string]any{"items": items}, ResultInfo: map[string]any{
		"page": page, "per_page": perPage, "count": len(items), "total_count": total,
	}})
}

func (s *Sandbox) handleGetVersion(w http.ResponseWriter, r *http.Request, _ *tokenRec) {
	name, id := r.PathValue("script"), r.PathValue("version_id")
	s.mu.Lock()
	sc := s.st.Scripts[name]
	var v *versionRec
	if sc != nil {
		v = sc.version(id)
	}
	s.mu.Unlock()
	switch {
	case sc == nil:
		writeError(w, http.StatusNotFound, codeWorkerNotFound, msgWorkerNotFound)
	case v == nil:
		writeError(w, http.StatusNotFound, codeVersionNotFound, fmt.Sprintf("version %s of %s not found", id, name))
	default:
		writeResult(w, http.StatusOK, v.json())
	}
}

// deploymentRequest is a parsed POST scripts/{name}/deployments body.
type deploymentRequest struct {
	Shares  []shareRec
	Message string
}

// parseDeployment checks a deployment the way Cloudflare does: strategy
// percentage, one or two distinct versions, each 0 to 100 %, 100 % in all.
func parseDeployment(body []byte) (deploymentRequest, error) {
	var req struct {
		Strategy *string `json:"strategy"`
		Versions *[]struct {
			VersionID  *string  `json:"version_id"`
			Percentage *float64 `json:"percentage"`
		} `json:"versions"`
		Annotations *struct {
			Message string `json:"workers/message"`
		} `json:"annotations"`
	}
	if err := decodeJSON(body, &req); err != nil {
		return deploymentRequest{}, err
	}
	var out deploymentRequest
	var errs []error
	if req.Strategy == nil || *req.Strategy != "percentage" {
		errs = append(errs, errors.New(`strategy: required; "percentage" (the only strategy)`))
	}
	if req.Versions == nil || len(*req.Versions) < 1 || len(*req.Versions) > 2 {
		errs = append(errs, errors.New("versions: required; one or two {version_id, percentage} whose percentages add up to 100"))
	} else {
		sum := 0.0
		seen := map[string]bool{}
		for i, v := range *req.Versions {
			switch {
			case v.VersionID == nil || *v.VersionID == "":
				errs = append(errs, fmt.Errorf("versions[%d].version_id: required", i))
				continue
			case v.Percentage == nil || math.IsNaN(*v.Percentage) || *v.Percentage < 0 || *v.Percentage > 100:
				errs = append(errs, fmt.Errorf("versions[%d].percentage: required; 0 to 100", i))
				continue
			case seen[*v.VersionID]:
				errs = append(errs, fmt.Errorf("versions[%d].version_id: %s is listed twice", i, *v.VersionID))
				continue
			}
			seen[*v.VersionID] = true
			sum += *v.Percentage
			out.Shares = append(out.Shares, shareRec{VersionID: *v.VersionID, Percentage: *v.Percentage})
		}
		if len(out.Shares) == len(*req.Versions) && math.Abs(sum-100) > 1e-6 {
			errs = append(errs, fmt.Errorf("versions: percentages add up to %v; they must add up to 100", sum))
		}
	}
	if req.Annotations != nil {
		if out.Message = req.Annotations.Message; len(out.Message) > maxAnnotationBytes {
			errs = append(errs, fmt.Errorf("annotations.workers/message: at most %d bytes", maxAnnotationBytes))
		}
	}
	return out, errors.Join(errs...)
}

// handleCreateDeployment splits a Worker's traffic (POST
// scripts/{name}/deployments); the new deployment is in force at once.
func (s *Sandbox) handleCreateDeployment(w http.ResponseWriter, r *http.Request, _ *tokenRec) {
	name := r.PathValue("script")
	if f := r.URL.Query().Get("force"); f != "" {
		if _, err := strconv.ParseBool(f); err != nil {
			writeError(w, http.StatusBadRequest, codeDeploymentInvalid, fmt.Sprintf("force: got %q; true or false", f))
			return
		}
	}
	body, ok := readBody(w, r)
	if !ok {
		return
	}
	req, err := parseDeployment(body)
	if err != nil {
		writeBadBody(w, codeDeploymentInvalid, err)
		return
	}
	dep, err := newDeployment(s.clock().UTC(), triggeredByDeployment, req.Message, req.Shares)
	if err != nil {
		s.writeErr(w, err)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	err = s.commitScriptLocked(name, func(_ *state, sc *scriptRec) error {
		for _, sh := range dep.Versions {
			if sc.version(sh.VersionID) == nil {
				return failf(http.StatusBadRequest, codeVersionNotFound, "versions: %s is not a version of %s", sh.VersionID, name)
			}
		}
		sc.addDeployment(dep)
		return nil
	})
	if err != nil {
		s.writeErr(w, err)
		return
	}
	writeResult(w, http.StatusOK, dep.json())
}

func (s *Sandbox) handleListDeployments(w http.ResponseWriter, r *http.Request, _ *tokenRec) {
	name := r.PathValue("script")
	s.mu.Lock()
	sc := s.st.Scripts[name]
	var out []map[string]any
	if sc != nil {
		out = make([]map[string]any, 0, len(sc.Deployments))
		for i := len(sc.Deployments) - 1; i >= 0; i-- { // newest first
			out = append(out, sc.Deployments[i].json())
		}
	}
	s.mu.Unlock()
	if sc == nil {
		writeError(w, http.StatusNotFound, codeWorkerNotFound, msgWorkerNotFound)
		return
	}
	writeResult(w, http.StatusOK, map[string]any{"deployments": out})
}

func (s *Sandbox) handleGetDeployment(w http.ResponseWriter, r *http.Request, _ *tokenRec) {
	name, id := r.PathValue("script"), r.PathValue("deployment_id")
	s.mu.Lock()
	sc := s.st.Scripts[name]
	var res map[string]any
	if sc != nil {
		for _, d := range sc.Deployments {
			if d.ID == id {
				res = d.json()
			}
		}
	}
	s.mu.Unlock()
	switch {
	case sc == nil:
		writeError(w, http.StatusNotFound, codeWorkerNotFound, msgWorkerNotFound)
	case res == nil:
		writeError(w, http.StatusNotFound, codeDeploymentNotFound, fmt.Sprintf("deployment %s of %s not found", id, name))
	default:
		writeResult(w, http.StatusOK, res)
	}
}

// handleDeleteDeployment deletes an old deployment; the one in force
// cannot be deleted.
func (s *Sandbox) handleDeleteDeployment(w http.ResponseWriter, r *http.Request, _ *tokenRec) {
	name, id := r.PathValue("script"), r.PathValue("deployment_id")
	s.mu.Lock()
	defer s.mu.Unlock()
	err := s.commitScriptLocked(name, func(_ *state, sc *scriptRec) error {
		for i, d := range sc.Deployments {
			if d.ID != id {
				continue
			}
			if i == len(sc.Deployments)-1 {
				return failf(http.StatusBadRequest, codeDeploymentInvalid, "deployment %s is the one in force; deploy another first", id)
			}
			sc.Deployments = append(sc.Deployments[:i:i], sc.Deployments[i+1:]...)
			return nil
		}
		return failf(http.StatusNotFound, codeDeploymentNotFound, "deployment %s of %s not found", id, name)
	})
	if err != nil {
		s.writeErr(w, err)
		return
	}
	writeResult(w, http.StatusOK, nil)
}

// DeploymentRecord is one traffic split of a Worker, the newest first.
type DeploymentRecord struct {
	ID        string
	CreatedOn time.Time
	Traffic   []TrafficShare
	Message   string
}

// Deployments returns a Worker's deployments, newest (in force) first; nil
// if there is no such Worker.
func (s *Sandbox) Deployments(script string) []DeploymentRecord {
	s.viewLocked()
	defer s.mu.Unlock()
	sc := s.st.Scripts[script]
	if sc == nil {
		return nil
	}
	out := make([]DeploymentRecord, 0, len(sc.Deployments))
	for i := len(sc.Deployments) - 1; i >= 0; i-- {
		d := sc.Deployments[i]
		rec := DeploymentRecord{ID: d.ID, CreatedOn: d.CreatedOn, Message: d.Message}
		for _, sh := range d.Versions {
			rec.Traffic = append(rec.Traffic, TrafficShare{VersionID: sh.VersionID, Percentage: sh.Percentage})
		}
		out = append(out, rec)
	}
	return out
}

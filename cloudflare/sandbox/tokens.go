package sandbox

import (
	"bytes"
	"fmt"
	"math"
	"net/http"
	"sort"
	"strconv"
	"time"
)

// Permission requirements per endpoint: the token needs one of the groups.
var (
	needRegistrarRead  = []string{pgRegistrarRead, pgRegistrarAdmin}
	needRegistrarAdmin = []string{pgRegistrarAdmin}
	needWorkersRead    = []string{pgWorkersRead, pgWorkersWrite}
	needWorkersWrite   = []string{pgWorkersWrite}
	needTokensRead     = []string{pgTokensRead, pgTokensWrite}
	needTokensWrite    = []string{pgTokensWrite}
)

// route is one endpoint the sandbox emulates: method, path pattern (under
// APIPrefix) and the account permission groups it needs (nil: any valid
// token; zone permissions are checked by the handler, on the zone).
type route struct {
	method, path string
	need         []string
	handler      func(*Sandbox, http.ResponseWriter, *http.Request, *tokenRec)
}

// routeTable lists every endpoint the sandbox emulates (doc.go has the
// same table for readers).
var routeTable = []route{
	{"POST", "accounts/{account_id}/registrar/domain-check", needRegistrarRead, (*Sandbox).handleDomainCheck},
	{"POST", "accounts/{account_id}/registrar/registrations", needRegistrarAdmin, (*Sandbox).handleRegister},
	{"GET", "accounts/{account_id}/registrar/registrations", needRegistrarRead, (*Sandbox).handleListRegistrations},
	{"GET", "accounts/{account_id}/registrar/registrations/{domain}", needRegistrarRead, (*Sandbox).handleGetRegistration},
	{"GET", "accounts/{account_id}/registrar/registrations/{domain}/registration-status", needRegistrarRead, (*Sandbox).handleRegistrationStatus},

	{"GET", "zones", nil, (*Sandbox).handleListZones},
	{"GET", "zones/{zone_id}", nil, (*Sandbox).handleGetZone},

	{"PUT", "accounts/{account_id}/workers/scripts/{script}", needWorkersWrite, (*Sandbox).handlePutScript},
	{"GET", "accounts/{account_id}/workers/scripts", needWorkersRead, (*Sandbox).handleListScripts},
	{"GET", "accounts/{account_id}/workers/scripts/{script}", needWorkersRead, (*Sandbox).handleGetScript},
	{"DELETE", "accounts/{account_id}/workers/scripts/{script}", needWorkersWrite, (*Sandbox).handleDeleteScript},
	{"GET", "accounts/{account_id}/workers/subdomain", needWorkersRead, (*Sandbox).handleAccountSubdomain},
	{"POST", "accounts/{account_id}/workers/scripts/{script}/subdomain", needWorkersWrite, (*Sandbox).handleScriptSubdomain},
	{"GET", "accounts/{account_id}/workers/scripts/{script}/subdomain", needWorkersRead, (*Sandbox).handleScriptSubdomain},
	{"POST", "accounts/{account_id}/workers/scripts/{script}/versions", needWorkersWrite, (*Sandbox).handleUploadVersion},
	{"GET", "accounts/{account_id}/workers/scripts/{script}/versions", needWorkersRead, (*Sandbox).handleListVersions},
	{"GET", "accounts/{account_id}/workers/scripts/{script}/versions/{version_id}", needWorkersRead, (*Sandbox).handleGetVersion},
	{"POST", "accounts/{account_id}/workers/scripts/{script}/deployments", needWorkersWrite, (*Sandbox).handleCreateDeployment},
	{"GET", "accounts/{account_id}/workers/scripts/{script}/deployments", needWorkersRead, (*Sandbox).handleListDeployments},
	{"GET", "accounts/{account_id}/workers/scripts/{script}/deployments/{deployment_id}", needWorkersRead, (*Sandbox).handleGetDeployment},
	{"DELETE", "accounts/{account_id}/workers/scripts/{script}/deployments/{deployment_id}", needWorkersWrite, (*Sandbox).handleDeleteDeployment},
	{"PUT", "accounts/{account_id}/workers/domains", needWorkersWrite, (*Sandbox).handleAttachDomain},
	{"GET", "accounts/{account_id}/workers/domains", needWorkersRead, (*Sandbox).handleListDomains},
	{"GET", "accounts/{account_id}/workers/domains/{domain_id}", needWorkersRead, (*Sandbox).handleGetDomain},
	{"DELETE", "accounts/{account_id}/workers/domains/{domain_id}", needWorkersWrite, (*Sandbox).handleDetachDomain},

	{"POST", "accounts/{account_id}/tokens", needTokensWrite, (*Sandbox).handleCreateToken},
	{"GET", "accounts/{account_id}/tokens", needTokensRead, (*Sandbox).handleListTokens},
	{"GET", "accounts/{account_id}/tokens/verify", nil, (*Sandbox).handleVerifyToken},
	{"GET", "accounts/{account_id}/tokens/permission_groups", needTokensRead, (*Sandbox).handlePermissionGroups},
	{"GET", "accounts/{account_id}/tokens/{token_id}", needTokensRead, (*Sandbox).handleGetToken},
	{"DELETE", "accounts/{account_id}/tokens/{token_id}", needTokensWrite, (*Sandbox).handleDeleteToken},
	{"PUT", "accounts/{account_id}/tokens/{token_id}/value", needTokensWrite, (*Sandbox).handleRollToken},
}

// routes registers every endpoint of routeTable.
func (s *Sandbox) routes() {
	mux := http.NewServeMux()
	for _, rt := range routeTable {
		h := rt.handler
		mux.Handle(rt.method+" "+APIPrefix+rt.path, s.endpoint(rt.need, func(w http.ResponseWriter, r *http.Request, t *tokenRec) { h(s, w, r, t) }))
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, codeNoRoute, "No route for that URI")
	})
	s.mux = mux
}

// tokenJSON renders a token as the tokens endpoints do (never its value).
func (t *tokenRec) json(now time.Time) map[string]any {
	status := t.Status
	if t.ExpiresOn != nil && !now.Before(*t.ExpiresOn) {
		status = "expired"
	}
	pols := make([]map[string]any, 0, len(t.Policies))
	for _, p := range t.Policies {
		groups := make([]map[string]any, 0, len(p.PermissionGroups))
		for _, g := range p.PermissionGroups {
			groups = append(groups, map[string]any{"id": g.ID, "name": g.Name})
		}
		pols = append(pols, map[string]any{"id": p.ID, "effect": p.Effect, "permission_groups": groups, "resources": p.Resources})
	}
	cond := map[string]any{}
	if len(t.Condition.RequestIP.In) > 0 || len(t.Condition.RequestIP.NotIn) > 0 {
		ip := map[string]any{}
		if len(t.Condition.RequestIP.In) > 0 {
			ip["in"] = t.Condition.RequestIP.In
		}
		if len(t.Condition.RequestIP.NotIn) > 0 {
			ip["not_in"] = t.Condition.RequestIP.NotIn
		}
		cond["request_ip"] = ip
	}
	out := map[string]any{
		"id":          t.ID,
		"name":        t.Name,
		"status":      status,
		"issued_on":   t.IssuedOn.Format(time.RFC3339),
		"modified_on": t.ModifiedOn.Format(time.RFC3339),
		"policies":    pols,
		"condition":   cond,
	}
	if t.NotBefore != nil {
		out["not_before"] = t.NotBefore.Format(time.RFC3339)
	}
	if t.ExpiresOn != nil {
		out["expires_on"] = t.ExpiresOn.Format(time.RFC3339)
	}
	return out
}

func (s *Sandbox) handleCreateToken(w http.ResponseWriter, r *http.Request, _ *tokenRec) {
	body, ok := readBody(w, r)
	if !ok {
		return
	}
	now := s.clock().UTC()
	req, err := parseTokenCreate(body, now)
	if err != nil {
		writeBadBody(w, codeTokenRequest, err)
		return
	}
	val, err := newTokenValue()
	if err != nil {
		writeError(w, http.StatusInternalServerError, codeUnknownError, msgUnknownError)
		return
	}
	id, err := randomHex(16)
	if err != nil {
		writeError(w, http.StatusInternalServerError, codeUnknownError, msgUnknownError)
		return
	}
	issued := now.Truncate(time.Second)
	t := tokenRec{
		ID: id, Name: req.Name, Status: "active", IssuedOn: issued, ModifiedOn: issued,
		NotBefore: req.NotBefore, ExpiresOn: req.ExpiresOn, Policies: req.Policies, Condition: req.Condition,
		ValueSHA256: hashToken(val),
	}
	s.mu.Lock()
	for _, z := range req.Zones {
		if s.st.Zones[z] == nil {
			s.mu.Unlock()
			writeError(w, http.StatusBadRequest, codeTokenRequest, fmt.Sprintf("policies: zone %s is not a zone of this account; list them at GET /zones", z))
			return
		}
	}
	// A per-operation token need not survive a crash (see store.go).
	s.lazyLocked(func(st *state) {
		cp := t
		st.Tokens[id] = &cp
	})
	s.byHash[t.ValueSHA256] = id
	res := t.json(now)
	s.mu.Unlock()
	res["value"] = val
	writeResult(w, http.StatusOK, res)
}

// queryInt parses a page-style query number; cloudflare-go sends these as
// floats, so "2" and "2.0" are both accepted, fractions are not.
func queryInt(v string, def, lo, hi int) (int, error) {
	if v == "" {
		return def, nil
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || f != math.Trunc(f) || f < float64(lo) || f > float64(hi) {
		return 0, fmt.Errorf("got %q; a whole number from %d to %d", v, lo, hi)
	}
	return int(f), nil
}

func (s *Sandbox) handleListTokens(w http.ResponseWriter, r *http.Request, _ *tokenRec) {
	q := r.URL.Query()
	page, err := queryInt(q.Get("page"), 1, 1, 1_000_000)
	if err != nil {
		writeError(w, http.StatusBadRequest, codeTokenRequest, "page: "+err.Error())
		return
	}
	perPage, err := queryInt(q.Get("per_page"), 20, 5, 50)
	if err != nil {
		writeError(w, http.StatusBadRequest, codeTokenRequest, "per_page: "+err.Error())
		return
	}
	dir := q.Get("direction")
	if dir != "" && dir != "asc" && dir != "desc" {
		writeError(w, http.StatusBadRequest, codeTokenRequest, fmt.Sprintf("direction: got %q; one of asc, desc", dir))
		return
	}
	s.mu.Lock()
	now := s.clock()
	toks := make([]*tokenRec, 0, len(s.st.Tokens))
	for _, t := range s.st.Tokens {
		toks = append(toks, t)
	}
	sort.Slice(toks, func(i, j int) bool {
		a, b := toks[i], toks[j]
		if dir == "desc" {
			a, b = b, a
		}
		if !a.IssuedOn.Equal(b.IssuedOn) {
			return a.IssuedOn.Before(b.IssuedOn)
		}
		return a.ID < b.ID
	})
	out := []map[string]any{}
	start := (page - 1) * perPage
	for i := start; i >= 0 && i < len(toks) && len(out) < perPage; i++ {
		out = append(out, toks[i].json(now))
	}
	total := len(toks)
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, envelope{Success: true, Result: out, ResultInfo: map[string]any{
		"page": page, "per_page": perPage, "count": len(out), "total_count": total,
		"total_pages": (total + perPage - 1) / perPage,
	}})
}

func (s *Sandbox) handleGetToken(w http.ResponseWriter, r *http.Request, _ *tokenRec) {
	id := r.PathValue("token_id")
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.st.Tokens[id]
	if t == nil {
		writeError(w, http.StatusNotFound, codeTokenNotFound, fmt.Sprintf("token %q not found", id))
		return
	}
	writeResult(w, http.StatusOK, t.json(s.clock()))
}

func (s *Sandbox) handleDeleteToken(w http.ResponseWriter, r *http.Request, _ *tokenRec) {
	id := r.PathValue("token_id")
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.st.Tokens[id]
	if t == nil {
		writeError(w, http.StatusNotFound, codeTokenNotFound, fmt.Sprintf("token %q not found", id))
		return
	}
	if id == s.st.ParentTokenID {
		// The sandbox's own bootstrap credential: deleting it would lock
		// everyone out of the account for good.
		writeError(w, http.StatusBadRequest, codeTokenRequest, "the parent token cannot delete itself; roll its value instead (PUT tokens/{id}/value)")
		return
	}
	s.lazyLocked(func(st *state) { delete(st.Tokens, id) })
	delete(s.byHash, t.ValueSHA256)
	writeResult(w, http.StatusOK, map[string]string{"id": id})
}

// handleRollToken gives a token a new value (PUT tokens/{id}/value): the
// old value stops working at once. Durable before the answer: the caller
// may hold no other copy of the new value.
func (s *Sandbox) handleRollToken(w http.ResponseWriter, r *http.Request, _ *tokenRec) {
	id := r.PathValue("token_id")
	body, ok := readBody(w, r)
	if !ok {
		return
	}
	if len(bytes.TrimSpace(body)) > 0 {
		var obj map[string]any
		if err := decodeJSON(body, &obj); err != nil || obj == nil {
			writeBadBody(w, codeTokenRequest, fmt.Errorf("%w: send {} (the body is empty)", errMalformedJSON))
			return
		}
	}
	val, err := newTokenValue()
	if err != nil {
		writeError(w, http.StatusInternalServerError, codeUnknownError, msgUnknownError)
		return
	}
	now := s.clock().UTC().Truncate(time.Second)
	s.mu.Lock()
	defer s.mu.Unlock()
	err = s.commitLocked(func(st *state) error {
		t := st.Tokens[id]
		if t == nil {
			return failf(http.StatusNotFound, codeTokenNotFound, "token %q not found", id)
		}
		cp := *t
		cp.ValueSHA256, cp.ModifiedOn = hashToken(val), now
		st.Tokens[id] = &cp
		if id == st.ParentTokenID {
			st.ParentToken = val
		}
		return nil
	})
	if err != nil {
		s.writeErr(w, err)
		return
	}
	s.reindexLocked()
	writeResult(w, http.StatusOK, val)
}

func (s *Sandbox) handleVerifyToken(w http.ResponseWriter, _ *http.Request, t *tokenRec) {
	res := map[string]any{"id": t.ID, "status": "active"}
	if t.ExpiresOn != nil {
		res["expires_on"] = t.ExpiresOn.Format(time.RFC3339)
	}
	if t.NotBefore != nil {
		res["not_before"] = t.NotBefore.Format(time.RFC3339)
	}
	writeJSON(w, http.StatusOK, envelope{
		Success:  true,
		Result:   res,
		Messages: []apiMessage{{Code: 10000, Message: "This API Token is valid and active"}},
	})
}

func (s *Sandbox) handlePermissionGroups(w http.ResponseWriter, r *http.Request, _ *tokenRec) {
	name, scope := r.URL.Query().Get("name"), r.URL.Query().Get("scope")
	out := []permissionGroup{}
	for _, g := range permissionGroups {
		if name != "" && g.Name != name {
			continue
		}
		if scope != "" && g.Scopes[0] != scope {
			continue
		}
		out = append(out, g)
	}
	writeResult(w, http.StatusOK, out)
}

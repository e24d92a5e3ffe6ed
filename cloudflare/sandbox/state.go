package sandbox

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
)

// stateVersion is bumped when the snapshot layout changes incompatibly.
// Version 1 (scripts without versions or deployments) is upgraded on load.
const stateVersion = 2

// state is everything the sandbox remembers, and the JSON snapshot written to
// Options.StateFile.
type state struct {
	Version       int                     `json:"version"`
	AccountID     string                  `json:"account_id"`
	ParentToken   string                  `json:"parent_token"` // the sandbox's own bootstrap secret
	ParentTokenID string                  `json:"parent_token_id"`
	Tokens        map[string]*tokenRec    `json:"tokens"`
	Registrations map[string]*regRec      `json:"registrations"`
	Workflows     map[string]*workflowRec `json:"workflows"`
	Scripts       map[string]*scriptRec   `json:"scripts"`
	Zones         map[string]*zoneRec     `json:"zones"`   // by zone id
	Domains       map[string]*domainRec   `json:"domains"` // Workers custom domains, by id
	Prices        map[string]priceRow     `json:"prices"`
}

// tokenRec is an account token. Only the SHA-256 of its value is kept, as a
// real token service would; the parent token is the one exception because
// ParentToken must be able to print it after a restart.
type tokenRec struct {
	ID          string       `json:"id"`
	Name        string       `json:"name"`
	Status      string       `json:"status"`
	IssuedOn    time.Time    `json:"issued_on"`
	ModifiedOn  time.Time    `json:"modified_on"`
	NotBefore   *time.Time   `json:"not_before,omitempty"`
	ExpiresOn   *time.Time   `json:"expires_on,omitempty"`
	Policies    []policyRec  `json:"policies"`
	Condition   conditionRec `json:"condition"`
	ValueSHA256 string       `json:"value_sha256"`
}

// policyRec is one token policy. Resources is Cloudflare's map as sent:
// resource name to "*", or the account to a map of its zones ("nested").
type policyRec struct {
	ID               string         `json:"id"`
	Effect           string         `json:"effect"`
	PermissionGroups []pgRef        `json:"permission_groups"`
	Resources        map[string]any `json:"resources"`
}

type pgRef struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

type conditionRec struct {
	RequestIP struct {
		In    []string `json:"in,omitempty"`
		NotIn []string `json:"not_in,omitempty"`
	} `json:"request_ip"`
}

// regRec is a registration the account owns (or is acquiring).
type regRec struct {
	Domain    string     `json:"domain_name"`
	Status    string     `json:"status"`
	AutoRenew bool       `json:"auto_renew"`
	Years     int        `json:"years"`
	CreatedAt time.Time  `json:"created_at"`
	ExpiresAt *time.Time `json:"expires_at"`
	Charged   string     `json:"charged"`
}

// workflowRec is the registration workflow of one domain.
type workflowRec struct {
	Domain    string    `json:"domain_name"`
	State     string    `json:"state"`
	Kind      string    `json:"kind"` // which prefix script it follows: "", slow, blocked, action, fail, async
	Polls     int       `json:"polls"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
	ErrCode   string    `json:"error_code,omitempty"`
	ErrMsg    string    `json:"error_message,omitempty"`
	Charge    string    `json:"charge"`
}

// scriptRec is an uploaded Worker: its versions and the deployments that
// split its traffic between them.
type scriptRec struct {
	Name            string    `json:"name"`
	Tag             string    `json:"tag"`
	CreatedOn       time.Time `json:"created_on"`
	ModifiedOn      time.Time `json:"modified_on"`
	WorkersDev      bool      `json:"workers_dev"`
	PreviewsEnabled bool      `json:"previews_enabled"`
	// LastNumber is the number of the newest version ever uploaded (numbers
	// are never reused, even after old versions are pruned).
	LastNumber  int              `json:"last_number"`
	Versions    []*versionRec    `json:"versions"`    // oldest first
	Deployments []*deploymentRec `json:"deployments"` // oldest first

	// Version 1 kept one upload per script here; decodeState turns it into
	// version 1 of the script and a 100 % deployment.
	V1Etag              string   `json:"etag,omitempty"`
	V1MainModule        string   `json:"main_module,omitempty"`
	V1CompatibilityDate string   `json:"compatibility_date,omitempty"`
	V1Modules           []module `json:"modules,omitempty"`
}

// versionRec is one immutable upload of a Worker.
type versionRec struct {
	ID                string    `json:"id"`
	Number            int       `json:"number"`
	Etag              string    `json:"etag"`
	MainModule        string    `json:"main_module"`
	CompatibilityDate string    `json:"compatibility_date"`
	Modules           []module  `json:"modules"`
	CreatedOn         time.Time `json:"created_on"`
	Source            string    `json:"source"`       // api
	TriggeredBy       string    `json:"triggered_by"` // upload (a script PUT) | version_upload
	Tag               string    `json:"tag,omitempty"`
	Message           string    `json:"message,omitempty"`
}

// deploymentRec is one traffic split, the newest being the one in force.
type deploymentRec struct {
	ID          string     `json:"id"`
	CreatedOn   time.Time  `json:"created_on"`
	Source      string     `json:"source"`
	Strategy    string     `json:"strategy"`
	Versions    []shareRec `json:"versions"`
	Message     string     `json:"message,omitempty"`
	TriggeredBy string     `json:"triggered_by"` // upload | deployment
}

// shareRec is one version's share of a deployment's traffic.
type shareRec struct {
	VersionID  string  `json:"version_id"`
	Percentage float64 `json:"percentage"`
}

// zoneRec is a zone of the account: a registration creates one.
type zoneRec struct {
	ID          string    `json:"id"`
	Name        string    `json:"name"`
	Status      string    `json:"status"`
	CreatedOn   time.Time `json:"created_on"`
	ModifiedOn  time.Time `json:"modified_on"`
	ActivatedOn time.Time `json:"activated_on"`
}

// domainRec is a Workers custom domain: a hostname on one of the account's
// zones served by a Worker.
type domainRec struct {
	ID          string    `json:"id"`
	Hostname    string    `json:"hostname"`
	Service     string    `json:"service"`
	Environment string    `json:"environment"`
	ZoneID      string    `json:"zone_id"`
	ZoneName    string    `json:"zone_name"`
	CertID      string    `json:"cert_id"`
	CreatedOn   time.Time `json:"created_on"`
}

func newState() *state {
	st := &state{Version: stateVersion, AccountID: accountID}
	st.fillMaps()
	return st
}

// fillMaps replaces maps a snapshot wrote as null: the handlers write into them.
func (st *state) fillMaps() {
	if st.Tokens == nil {
		st.Tokens = map[string]*tokenRec{}
	}
	if st.Registrations == nil {
		st.Registrations = map[string]*regRec{}
	}
	if st.Workflows == nil {
		st.Workflows = map[string]*workflowRec{}
	}
	if st.Scripts == nil {
		st.Scripts = map[string]*scriptRec{}
	}
	if st.Zones == nil {
		st.Zones = map[string]*zoneRec{}
	}
	if st.Domains == nil {
		st.Domains = map[string]*domainRec{}
	}
	if st.Prices == nil {
		st.Prices = map[string]priceRow{}
	}
}

// decodeState parses and checks a snapshot, upgrading version 1.
func decodeState(path string, r io.Reader) (*state, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("read sandbox state %s: %w", path, err)
	}
	st := &state{}
	if err := json.Unmarshal(b, st); err != nil {
		return nil, fmt.Errorf("read sandbox state %s: not a sandbox snapshot: %w", path, err)
	}
	if st.Version != stateVersion && st.Version != 1 {
		return nil, fmt.Errorf("read sandbox state %s: version %d, this sandbox reads versions 1 and %d", path, st.Version, stateVersion)
	}
	if st.AccountID != accountID || st.ParentToken == "" || st.Tokens[st.ParentTokenID] == nil {
		return nil, fmt.Errorf("read sandbox state %s: snapshot is missing the account or its parent token", path)
	}
	st.fillMaps()
	if st.Version == 1 {
		upgradeV1(st)
	}
	return st, nil
}

// upgradeV1 turns each version-1 script (one upload) into its version 1
// deployed at 100 %.
func upgradeV1(st *state) {
	for _, sc := range st.Scripts {
		if len(sc.Versions) > 0 || len(sc.V1Modules) == 0 {
			continue
		}
		v := &versionRec{
			ID: uuidFrom([]byte(sc.Name), []byte(sc.V1Etag)), Number: 1, Etag: sc.V1Etag,
			MainModule: sc.V1MainModule, CompatibilityDate: sc.V1CompatibilityDate, Modules: sc.V1Modules,
			CreatedOn: sc.ModifiedOn, Source: "api", TriggeredBy: triggeredByUpload,
		}
		sc.Versions, sc.LastNumber = []*versionRec{v}, 1
		sc.Deployments = []*deploymentRec{{
			ID: uuidFrom([]byte("deployment"), []byte(v.ID)), CreatedOn: sc.ModifiedOn, Source: "api",
			Strategy: "percentage", Versions: []shareRec{{VersionID: v.ID, Percentage: 100}}, TriggeredBy: triggeredByUpload,
		}}
		sc.V1Etag, sc.V1MainModule, sc.V1CompatibilityDate, sc.V1Modules = "", "", "", nil
	}
	st.Version = stateVersion
}

// saveState writes the snapshot atomically: a temp file in the same
// directory, synced, renamed over the old one, and the directory synced, so
// a crash leaves either the old or the new state and never half of one, and
// a change reported done survives a crash. It returns the new file's stamp.
func saveState(path string, st *state) (stamp fileStamp, err error) {
	b, err := json.Marshal(st)
	if err != nil {
		return stamp, fmt.Errorf("encode sandbox state: %w", err)
	}
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return stamp, fmt.Errorf("write sandbox state: %w", err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = os.Remove(tmp)
		}
	}()
	fail := func(err error) (fileStamp, error) {
		_ = f.Close()
		return fileStamp{}, fmt.Errorf("write sandbox state: %w", err)
	}
	// The snapshot holds the sandbox's parent token: owner-only.
	if err = f.Chmod(0o600); err != nil {
		return fail(err)
	}
	if _, err = f.Write(b); err != nil {
		return fail(err)
	}
	if err = f.Sync(); err != nil {
		return fail(err)
	}
	if stamp, err = statOpen(f); err != nil {
		return fail(err)
	}
	if err = f.Close(); err != nil {
		return stamp, fmt.Errorf("write sandbox state: %w", err)
	}
	if err = os.Rename(tmp, path); err != nil {
		return stamp, fmt.Errorf("write sandbox state: %w", err)
	}
	if d, derr := os.Open(dir); derr == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return stamp, nil
}

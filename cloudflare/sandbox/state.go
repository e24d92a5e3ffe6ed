package sandbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// stateVersion is bumped when the snapshot layout changes incompatibly.
const stateVersion = 1

// state is everything the sandbox remembers, and the JSON snapshot written to
// Options.StateFile after every change.
type state struct {
	Version       int                     `json:"version"`
	AccountID     string                  `json:"account_id"`
	ParentToken   string                  `json:"parent_token"` // the sandbox's own bootstrap secret
	ParentTokenID string                  `json:"parent_token_id"`
	Tokens        map[string]*tokenRec    `json:"tokens"`
	Registrations map[string]*regRec      `json:"registrations"`
	Workflows     map[string]*workflowRec `json:"workflows"`
	Scripts       map[string]*scriptRec   `json:"scripts"`
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

type policyRec struct {
	ID               string            `json:"id"`
	Effect           string            `json:"effect"`
	PermissionGroups []pgRef           `json:"permission_groups"`
	Resources        map[string]string `json:"resources"`
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

// scriptRec is an uploaded Worker.
type scriptRec struct {
	Name              string    `json:"name"`
	Tag               string    `json:"tag"`
	Etag              string    `json:"etag"`
	MainModule        string    `json:"main_module"`
	CompatibilityDate string    `json:"compatibility_date"`
	Modules           []module  `json:"modules"`
	CreatedOn         time.Time `json:"created_on"`
	ModifiedOn        time.Time `json:"modified_on"`
	WorkersDev        bool      `json:"workers_dev"`
	PreviewsEnabled   bool      `json:"previews_enabled"`
}

func newState() *state {
	return &state{
		Version:       stateVersion,
		AccountID:     accountID,
		Tokens:        map[string]*tokenRec{},
		Registrations: map[string]*regRec{},
		Workflows:     map[string]*workflowRec{},
		Scripts:       map[string]*scriptRec{},
		Prices:        map[string]priceRow{},
	}
}

// loadState reads a snapshot; a missing file is not an error (ok=false).
func loadState(path string) (st *state, ok bool, err error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("read sandbox state: %w", err)
	}
	st = newState()
	if err := json.Unmarshal(b, st); err != nil {
		return nil, false, fmt.Errorf("read sandbox state %s: not a sandbox snapshot: %w", path, err)
	}
	if st.Version != stateVersion {
		return nil, false, fmt.Errorf("read sandbox state %s: version %d, this sandbox reads version %d", path, st.Version, stateVersion)
	}
	if st.AccountID != accountID || st.ParentToken == "" || st.Tokens[st.ParentTokenID] == nil {
		return nil, false, fmt.Errorf("read sandbox state %s: snapshot is missing the account or its parent token", path)
	}
	// Maps written as null decode to nil; the handlers write into them.
	if st.Registrations == nil {
		st.Registrations = map[string]*regRec{}
	}
	if st.Workflows == nil {
		st.Workflows = map[string]*workflowRec{}
	}
	if st.Scripts == nil {
		st.Scripts = map[string]*scriptRec{}
	}
	if st.Prices == nil {
		st.Prices = map[string]priceRow{}
	}
	return st, true, nil
}

// saveState writes the snapshot atomically: a temp file in the same
// directory, synced, then renamed over the old one, so a crash leaves either
// the old or the new state and never half of one.
func saveState(path string, st *state) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("encode sandbox state: %w", err)
	}
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write sandbox state: %w", err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = os.Remove(tmp)
		}
	}()
	// The snapshot holds the sandbox's parent token: owner-only.
	if err = f.Chmod(0o600); err != nil {
		_ = f.Close()
		return fmt.Errorf("write sandbox state: %w", err)
	}
	if _, err = f.Write(b); err != nil {
		_ = f.Close()
		return fmt.Errorf("write sandbox state: %w", err)
	}
	if err = f.Sync(); err != nil {
		_ = f.Close()
		return fmt.Errorf("write sandbox state: %w", err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("write sandbox state: %w", err)
	}
	if err = os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write sandbox state: %w", err)
	}
	return nil
}

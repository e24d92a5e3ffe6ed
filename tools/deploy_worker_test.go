package tools

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// TestWorkerSizeLimitIsOneNumber: the largest module the tool accepts
// (schema maxLength and the decoder's check, both MaxModuleBytes) is the
// largest the default policy allows, so no module passes one and fails the
// other.
func TestWorkerSizeLimitIsOneNumber(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile(filepath.Join("..", "cerbos-policies", "export_constants", "tollgate_guardrails.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		ExportConstants struct {
			Definitions map[string]any `yaml:"definitions"`
		} `yaml:"exportConstants"`
	}
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	policy, ok := doc.ExportConstants.Definitions["max_worker_module_bytes"].(int)
	if !ok || policy != MaxModuleBytes {
		t.Fatalf("policy max_worker_module_bytes is %v, tools.MaxModuleBytes is %d: change both together", doc.ExportConstants.Definitions["max_worker_module_bytes"], MaxModuleBytes)
	}
	if e := checkModule("export default {}\n" + strings.Repeat("/", MaxModuleBytes-18)); e != nil {
		t.Fatalf("a module of exactly the limit is refused: %v", e)
	}
}

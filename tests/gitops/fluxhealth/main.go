// Command fluxhealth judges the sample LangfuseUpgrades (tests/gitops/samples) the way Flux's
// kustomize-controller v1.9.6 does, with the libraries it uses:
//
//   - kstatus (github.com/fluxcd/cli-utils/pkg/kstatus/status.Compute): what `wait: true` and
//     `healthChecks` use for a custom resource when no healthCheckExprs match it;
//   - the healthCheckExprs of gitops/flux/kustomization.yaml, through
//     github.com/fluxcd/pkg/runtime/cel (NewStatusReader validates the list as the controller
//     does, NewStatusEvaluator evaluates it).
//
// It compares both with the expected results below and exits 1 on any mismatch.
// Usage: go run . <repo root>   (tests/gitops/run.sh runs it)
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/fluxcd/cli-utils/pkg/kstatus/status"
	"github.com/fluxcd/pkg/apis/kustomize"
	"github.com/fluxcd/pkg/runtime/cel"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

// sample -> {kstatus, CEL}. "Unknown" is an expression that could not be evaluated (no status
// yet): the controller keeps waiting, as for InProgress.
var expected = map[string][2]string{
	"pending-invalid-spec":             {"Failed", "Failed"},
	"provisioning":                     {"InProgress", "InProgress"},
	"awaiting-promotion":               {"InProgress", "InProgress"},
	"shifting-traffic":                 {"InProgress", "InProgress"},
	"draining":                         {"InProgress", "InProgress"},
	"migrating":                        {"InProgress", "InProgress"},
	"verifying":                        {"InProgress", "InProgress"},
	"retiring-source":                  {"InProgress", "InProgress"},
	"finalizing":                       {"InProgress", "InProgress"},
	"completed":                        {"Current", "Current"},
	"handing-off":                      {"InProgress", "InProgress"},
	"migrating-data-model":             {"InProgress", "InProgress"},
	"paused":                           {"InProgress", "InProgress"},
	"blocked-selector-reverted":        {"Failed", "Failed"},
	"degraded-counts-mismatch":         {"Failed", "Failed"},
	"rolling-back":                     {"InProgress", "InProgress"},
	"rolled-back":                      {"Failed", "Failed"},
	"failed":                           {"Failed", "Failed"},
	"no-status":                        {"Current", "Unknown"}, // kstatus: no conditions at all = Current
	"empty-status":                     {"Current", "Unknown"},
	"stale-generation":                 {"InProgress", "InProgress"},
	"ready-condition-stale":            {"Current", "InProgress"}, // kstatus does not read condition generations
	"awaiting-promotion-annotated":     {"InProgress", "InProgress"},
	"awaiting-promotion-spec-approved": {"InProgress", "InProgress"},
	"manual-provisioning":              {"InProgress", "InProgress"},
	"manual-draining-approved":         {"InProgress", "InProgress"},
	"paused-awaiting":                  {"InProgress", "InProgress"},
	"blocked-source-scaled-up":         {"Failed", "Failed"},
	"blocked-abort-too-late":           {"Failed", "Failed"},
	"being-deleted":                    {"Terminating", "InProgress"},
	"phase-missing-stalled":            {"Failed", "Failed"},
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: fluxhealth <repo root>")
		os.Exit(2)
	}
	root := os.Args[1]
	exprs, err := healthCheckExprs(filepath.Join(root, "gitops/flux/kustomization.yaml"))
	if err != nil {
		fail(err)
	}
	if _, err := cel.NewStatusReader(exprs); err != nil {
		fail(fmt.Errorf("healthCheckExprs rejected: %w", err))
	}
	var mine *kustomize.CustomHealthCheck
	for i := range exprs {
		if exprs[i].APIVersion == "upgrades.lfu-operator.dev/v1alpha1" && exprs[i].Kind == "LangfuseUpgrade" {
			mine = &exprs[i]
		}
	}
	if mine == nil {
		fail(fmt.Errorf("no healthCheckExprs entry for upgrades.lfu-operator.dev/v1alpha1 LangfuseUpgrade"))
	}
	evaluator, err := cel.NewStatusEvaluator(&mine.HealthCheckExpressions)
	if err != nil {
		fail(err)
	}

	files, err := filepath.Glob(filepath.Join(root, "tests/gitops/samples/*.json"))
	if err != nil {
		fail(err)
	}
	sort.Strings(files)
	failures, passed := 0, 0
	seen := map[string]bool{}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".json")
		seen[name] = true
		want, ok := expected[name]
		if !ok {
			fmt.Fprintf(os.Stderr, "FAIL %s: no expectation for this sample\n", name)
			failures++
			continue
		}
		u, err := load(f)
		if err != nil {
			fail(err)
		}
		ks := "error"
		if res, err := status.Compute(u); err == nil {
			ks = res.Status.String()
		}
		ce := "Unknown"
		if res, err := evaluator.Evaluate(context.Background(), u); err == nil {
			ce = res.Status.String()
		}
		for i, got := range []string{ks, ce} {
			what := [2]string{"kstatus", "healthCheckExprs"}[i]
			if got != want[i] {
				fmt.Fprintf(os.Stderr, "FAIL %s: %s got %s, want %s\n", name, what, got, want[i])
				failures++
			} else {
				passed++
			}
		}
	}
	for name := range expected {
		if !seen[name] {
			fmt.Fprintf(os.Stderr, "FAIL %s: expected sample is missing\n", name)
			failures++
		}
	}
	fmt.Printf("flux kstatus + healthCheckExprs: %d passed, %d failed\n", passed, failures)
	if failures > 0 || passed == 0 {
		os.Exit(1)
	}
}

// healthCheckExprs: every healthCheckExprs entry of every Kustomization in a multi-document file.
func healthCheckExprs(path string) ([]kustomize.CustomHealthCheck, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []kustomize.CustomHealthCheck
	for _, doc := range bytes.Split(data, []byte("\n---\n")) {
		var k struct {
			Kind string `json:"kind"`
			Spec struct {
				HealthCheckExprs []kustomize.CustomHealthCheck `json:"healthCheckExprs"`
			} `json:"spec"`
		}
		if err := yaml.Unmarshal(doc, &k); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if k.Kind == "Kustomization" {
			out = append(out, k.Spec.HealthCheckExprs...)
		}
	}
	return out, nil
}

func load(path string) (*unstructured.Unstructured, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	obj := map[string]any{}
	// UseNumber-free decoding turns numbers into float64; unstructured wants int64 for
	// metadata.generation and status.observedGeneration, as the API machinery would give it.
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(&obj); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &unstructured.Unstructured{Object: numbers(obj).(map[string]any)}, nil
}

func numbers(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			x[k] = numbers(e)
		}
		return x
	case []any:
		for i, e := range x {
			x[i] = numbers(e)
		}
		return x
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return i
		}
		f, _ := x.Float64()
		return f
	}
	return v
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "fluxhealth:", err)
	os.Exit(1)
}

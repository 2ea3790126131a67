// Command argocdlua runs gitops/argocd/health.lua, actions/discovery.lua and every
// actions/*/action.lua against every sample in tests/gitops/samples with gopher-lua, the Lua
// interpreter Argo CD embeds, at the versions Argo CD v3.5.7 pins (github.com/yuin/gopher-lua
// v1.1.2, layeh.com/gopher-json for reading results back). The state is set up like Argo CD
// sets it up for scripts from argocd-cm: no standard libraries except package, base and table
// (plus os.time), the object in the global `obj`, a 1 s deadline. It prints one line per script
// and sample in the format of tests/gitops/dump.lua; tests/gitops/run.sh diffs the two, so
// PUC Lua 5.1 (where the expectations are asserted) and gopher-lua must agree on every output.
// Usage: go run . <repo root>
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
	"time"

	lua "github.com/yuin/gopher-lua"
	luajson "layeh.com/gopher-json"
)

var valid = map[string]bool{"Healthy": true, "Progressing": true, "Degraded": true, "Suspended": true, "Missing": true, "Unknown": true}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: argocdlua <repo root>")
		os.Exit(2)
	}
	root := os.Args[1]
	dir := filepath.Join(root, "gitops/argocd")
	files, err := filepath.Glob(filepath.Join(root, "tests/gitops/samples/*.json"))
	check(err)
	// by sample name, as dump.lua sorts them
	sort.Slice(files, func(i, j int) bool { return sampleName(files[i]) < sampleName(files[j]) })
	scripts := []struct{ label, path string }{
		{"health", "health.lua"},
		{"discovery", "actions/discovery.lua"},
		{"action:abort", "actions/abort/action.lua"},
		{"action:approve", "actions/approve/action.lua"},
		{"action:pause", "actions/pause/action.lua"},
		{"action:resume", "actions/resume/action.lua"},
	}
	for _, f := range files {
		name := sampleName(f)
		data, err := os.ReadFile(f)
		check(err)
		var obj map[string]any
		check(json.Unmarshal(data, &obj))
		for _, s := range scripts {
			src, err := os.ReadFile(filepath.Join(dir, s.path))
			check(err)
			out, err := run(string(src), obj)
			if err != nil {
				fmt.Fprintf(os.Stderr, "FAIL %s %s: %v\n", name, s.label, err)
				os.Exit(1)
			}
			if s.label == "health" {
				var hs struct{ Status string }
				check(json.Unmarshal([]byte(out), &hs))
				if !valid[hs.Status] {
					fmt.Fprintf(os.Stderr, "FAIL %s: invalid health status %q\n", name, hs.Status)
					os.Exit(1)
				}
			}
			fmt.Printf("%s\t%s\t%s\n", name, s.label, out)
		}
	}
}

// run executes one script against obj and returns what it returned, as canonical JSON.
func run(script string, obj map[string]any) (string, error) {
	L := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer L.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{{lua.LoadLibName, lua.OpenPackage}, {lua.BaseLibName, lua.OpenBase}, {lua.TabLibName, lua.OpenTable}} {
		if err := L.CallByParam(lua.P{Fn: L.NewFunction(lib.open), NRet: 0, Protect: true}, lua.LString(lib.name)); err != nil {
			return "", err
		}
	}
	L.RegisterModule(lua.OsLibName, map[string]lua.LGFunction{"time": func(L *lua.LState) int {
		L.Push(lua.LNumber(time.Now().Unix()))
		return 1
	}})
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	L.SetContext(ctx)
	L.SetGlobal("obj", toLua(L, obj))
	if err := L.DoString(script); err != nil {
		return "", err
	}
	ret := L.Get(-1)
	if ret.Type() != lua.LTTable {
		return "", fmt.Errorf("expect table output from Lua script, not %s", ret.Type())
	}
	raw, err := luajson.Encode(ret)
	if err != nil {
		return "", err
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return "", err
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return "", err
	}
	return strings.TrimSuffix(buf.String(), "\n"), nil
}

// toLua: JSON values as Lua values; null is nil, so the key is absent (as in Argo CD).
func toLua(L *lua.LState, v any) lua.LValue {
	switch x := v.(type) {
	case bool:
		return lua.LBool(x)
	case float64:
		return lua.LNumber(x)
	case string:
		return lua.LString(x)
	case []any:
		t := L.CreateTable(len(x), 0)
		for _, e := range x {
			t.Append(toLua(L, e))
		}
		return t
	case map[string]any:
		t := L.CreateTable(0, len(x))
		for k, e := range x {
			t.RawSetH(lua.LString(k), toLua(L, e))
		}
		return t
	}
	return lua.LNil
}

func sampleName(path string) string { return strings.TrimSuffix(filepath.Base(path), ".json") }

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "argocdlua:", err)
		os.Exit(1)
	}
}

//go:build unix

package testproc

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
)

// toolDirs are searched after PATH: brokers live in sbin, which an ordinary
// user's PATH often lacks.
var toolDirs = []string{"/usr/sbin", "/usr/local/sbin", "/usr/bin", "/usr/local/bin", "/opt/homebrew/sbin", "/opt/homebrew/bin"}

// HideToolsEnv names the environment variable that makes LookTool report the programs
// it lists (comma-separated) as not installed, so that the suite can be run as on a
// machine without the brokers: MDCLIENT_HIDE_TOOLS=mosquitto,ejabberdctl go test ./...
const HideToolsEnv = "MDCLIENT_HIDE_TOOLS"

// LookTool returns the path of the installed program name, found in PATH or
// else in one of the usual bin and sbin directories. The error wraps
// exec.ErrNotFound.
func LookTool(name string) (string, error) {
	if slices.Contains(strings.Split(os.Getenv(HideToolsEnv), ","), name) {
		return "", fmt.Errorf("%s: %w (hidden by %s)", name, exec.ErrNotFound, HideToolsEnv)
	}
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range toolDirs {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: %w in PATH or %s", name, exec.ErrNotFound, strings.Join(toolDirs, ", "))
}

// TB is the part of testing.TB that [RequireTool] uses. It is not testing.TB
// itself so that programs, not only tests, can use this package without
// linking in package testing.
type TB interface {
	Helper()
	Fatal(args ...any)
	Skip(args ...any)
}

// RequireTool returns [LookTool]'s path of name or, if the program is not
// installed, ends the test with the message missing: it skips the test, but
// fails it when the environment variable CI is non-empty, because there a
// missing tool is a broken setup, not a developer's machine without it.
func RequireTool(t TB, name, missing string) string {
	t.Helper()
	p, err := LookTool(name)
	if err == nil {
		return p
	}
	if os.Getenv("CI") != "" {
		t.Fatal(missing)
	}
	t.Skip(missing)
	return ""
}

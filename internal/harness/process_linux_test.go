package harness

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestOrphanHelper is not a test: TestKilledParentLeavesNoChild runs the
// test binary with it as a parent that starts a child and waits to be
// killed.
func TestOrphanHelper(t *testing.T) {
	if os.Getenv("HARNESS_ORPHAN_HELPER") != "1" {
		t.Skip("helper process for TestKilledParentLeavesNoChild")
	}
	p, err := StartProcess(exec.Command("sleep", "60"), nil)
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	fmt.Println(p.PID())
	select {}
}

// TestKilledParentLeavesNoChild: a parent killed with SIGKILL (no
// deferred Stop runs) takes its children with it (Pdeathsig).
func TestKilledParentLeavesNoChild(t *testing.T) {
	parent := exec.Command(os.Args[0], "-test.run=^TestOrphanHelper$")
	parent.Env = append(os.Environ(), "HARNESS_ORPHAN_HELPER=1")
	stdout, err := parent.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := parent.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	pid, perr := strconv.Atoi(strings.TrimSpace(line))
	if err != nil || perr != nil {
		parent.Process.Kill()
		parent.Wait()
		t.Fatalf("helper said %q (%v)", line, err)
	}
	if !alive(pid) {
		t.Fatalf("child %d not running before the parent is killed", pid)
	}
	parent.Process.Kill()
	parent.Wait()
	deadline := time.Now().Add(5 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("child %d still running 5 s after its parent was killed", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// alive says whether pid is a process that has not ended (a zombie has).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// pid (comm) state ...: the state follows the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && s[i+2] != 'Z' && s[i+2] != 'X'
}

// TestProcessCPUTime: a child that spins for a while has used about that
// much processor time; one that sleeps has used next to none.
func TestProcessCPUTime(t *testing.T) {
	spin, err := StartProcess(exec.Command("sh", "-c", "while :; do :; done"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer spin.Kill()
	sleeper, err := StartProcess(exec.Command("sleep", "30"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sleeper.Kill()
	time.Sleep(1500 * time.Millisecond)
	if d, err := spin.CPUTime(); err != nil || d < 500*time.Millisecond || d > 2*time.Second {
		t.Errorf("child spinning for 1.5 s: CPUTime = %v, %v", d, err)
	}
	if d, err := sleeper.CPUTime(); err != nil || d > 200*time.Millisecond {
		t.Errorf("sleeping child: CPUTime = %v, %v", d, err)
	}
}

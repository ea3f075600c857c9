package jsonl

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

type rec struct {
	A int    `json:"a"`
	B string `json:"b"`
}

func TestRead_SkipsBlankLines(t *testing.T) {
	p := filepath.Join(t.TempDir(), "r.jsonl")
	if err := os.WriteFile(p, []byte("{\"a\":1,\"b\":\"x\"}\n\n  \n{\"a\":2}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := Read[rec](p)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0] != (rec{1, "x"}) || got[1] != (rec{2, ""}) {
		t.Fatalf("got %+v", got)
	}
}

func TestRead_BadLineNamesFileAndLine(t *testing.T) {
	p := filepath.Join(t.TempDir(), "r.jsonl")
	if err := os.WriteFile(p, []byte("{\"a\":1}\n\n{\"a\":\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Read[rec](p); err == nil || !strings.Contains(err.Error(), p+":3:") {
		t.Fatalf("err = %v, want one naming %s:3", err, p)
	}
}

func TestRead_MissingFile(t *testing.T) {
	if _, err := Read[rec](filepath.Join(t.TempDir(), "none")); !os.IsNotExist(err) {
		t.Fatalf("err = %v, want not exist", err)
	}
}

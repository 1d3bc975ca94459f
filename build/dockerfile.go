package build

import (
	"bytes"
	"errors"
	"fmt"
	"strings"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
)

// A LineError is an error about one instruction of a Dockerfile.
type LineError struct {
	File string // the Dockerfile's name, such as "Dockerfile"
	Line int
	Err  error
}

func (e *LineError) Error() string { return fmt.Sprintf("%s:%d: %v", e.File, e.Line, e.Err) }
func (e *LineError) Unwrap() error { return e.Err }

// dockerfile is a parsed Dockerfile.
type dockerfile struct {
	name     string // for errors
	escape   rune
	warnings []parser.Warning
	metaArgs []step // the ARGs before the first FROM
	stages   []*stage
}

// A stage is a FROM and the instructions up to the next.
type stage struct {
	from  *instructions.Stage
	line  int
	text  string
	steps []step
}

// A step is one instruction.
type step struct {
	line int
	text string // as written
	cmd  instructions.Command
}

// count is the number of steps Build reports: every FROM and every
// instruction after the first.
func (df *dockerfile) count() int {
	n := 0
	for _, st := range df.stages {
		n += 1 + len(st.steps)
	}
	return n
}

func (df *dockerfile) errorf(line int, format string, args ...any) error {
	return &LineError{File: df.name, Line: line, Err: fmt.Errorf(format, args...)}
}

// parseDockerfile parses src with buildkit's parser, and each
// instruction with its instructions package, so that the syntax, flags
// and JSON forms are Docker's to the letter.
func parseDockerfile(name string, src []byte) (*dockerfile, error) {
	res, err := parser.Parse(bytes.NewReader(src))
	if err != nil {
		var le *parser.LocationError
		if errors.As(err, &le) && len(le.Locations) > 0 && len(le.Locations[0]) > 0 {
			return nil, &LineError{File: name, Line: le.Locations[0][0].Start.Line, Err: unlocated(err)}
		}
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	df := &dockerfile{name: name, escape: res.EscapeToken, warnings: res.Warnings}
	for _, node := range res.AST.Children {
		text := strings.TrimSpace(node.Original)
		inst, err := instructions.ParseInstruction(node)
		if err != nil {
			return nil, df.errorf(node.StartLine, "%s: %w", firstWord(text), unlocated(err))
		}
		switch c := inst.(type) {
		case *instructions.Stage:
			df.stages = append(df.stages, &stage{from: c, line: node.StartLine, text: text})
		case instructions.Command:
			s := step{line: node.StartLine, text: text, cmd: c}
			if len(df.stages) == 0 {
				if _, ok := c.(*instructions.ArgCommand); !ok {
					return nil, df.errorf(node.StartLine, "%s before the first FROM", firstWord(text))
				}
				df.metaArgs = append(df.metaArgs, s)
				continue
			}
			cur := df.stages[len(df.stages)-1]
			cur.steps = append(cur.steps, s)
		default:
			return nil, df.errorf(node.StartLine, "unexpected instruction %T", inst)
		}
	}
	if len(df.stages) == 0 {
		return nil, fmt.Errorf("%s: no FROM instruction", name)
	}
	return df, nil
}

func firstWord(s string) string {
	w, _, _ := strings.Cut(s, " ")
	return strings.ToUpper(w)
}

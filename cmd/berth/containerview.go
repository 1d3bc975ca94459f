package main

import "path/filepath"

// listContainerViews returns the detached containers of the state
// directory (containers.go), as ps and the other listing commands see
// them. Whether one runs is for listAll to say, from its sandbox's own
// record: the container's says what its reaper last wrote.
func listContainerViews(stateRoot string) ([]*listed, error) {
	records, err := listContainers(stateRoot)
	if err != nil {
		return nil, err
	}
	out := make([]*listed, 0, len(records))
	for _, c := range records {
		dir := containerDir(stateRoot, c.ID)
		l := &listed{
			ID: c.ID, SandboxID: c.SandboxID, Name: c.Name, Image: c.Image, Args: c.Command, Last: c.Last,
			Labels: c.Labels, Created: c.Created, State: c.Status, Detached: true,
			ExitCode: c.ExitCode, Started: c.Started, Finished: c.Finished,
			RestartCount: c.RestartCount, Ports: c.Ports,
			Log: filepath.Join(dir, containerLog), Exit: filepath.Join(dir, containerExit),
		}
		l.Command = c.Command // not started yet, or by an older berth
		if c.Last != nil && len(c.Last.Command) > 0 {
			l.Command = c.Last.Command
		}
		l.Error = c.Error
		out = append(out, l)
	}
	return out, nil
}

# Refuses shell tool calls that would wipe a machine: a recursive rm of the root directory,
# making a file system (mkfs), and dd writing onto a device. Attach it to the organization (or
# to any team or agent) and the worker asks for it before every tool call (`POST
# /policies/enforce`, action `tool_execution`).
package kubiya.tools.destructive_commands

# Where a command starts: the line's start, after ; & | or (, or after sudo-like wrappers.
# "echo mkfs" mentions mkfs without running it.
start := `(^|[;&|(]|\b(sudo|doas|exec|nohup|xargs|env)\s)\s*`

patterns := [concat("", [start, p]) | some p in [
	# rm with any flags (-rf, -fr, -r -f, --no-preserve-root…) aimed at / or /*
	`rm\s+(-{1,2}[\w-]+\s+)*/(\*|\s|$)`,
	`mkfs(\.\w+)?(\s|$)`,
	`dd\s.*\bof=/dev/`,
]]

# The command line, whatever the shell tool calls its argument.
commands contains command if {
	input.action == "tool_execution"
	some name in ["command", "cmd", "script"]
	command := input.tool.arguments[name]
	is_string(command)
}

deny contains msg if {
	some command in commands
	some pattern in patterns
	regex.match(pattern, command)
	msg := sprintf("destructive command refused: %s", [command])
}

# Executions in the production environment are allowed only on weekdays between 09:00 and
# 18:00 UTC. Attach it to the organization (it looks at the environment the execution's queue
# is in) or to the production environment itself.
package kubiya.execution.production_hours

start_hour := 9

end_hour := 18

weekend := {"Saturday", "Sunday"}

production := {"production", "prod"}

deny contains msg if {
	input.action == "execute"
	input.execution.environment_name in production
	not in_window
	msg := sprintf(
		"executions in %s are allowed on weekdays from %d:00 to %d:00 UTC only",
		[input.execution.environment_name, start_hour, end_hour],
	)
}

in_window if {
	now := time.now_ns()
	[hour, _, _] := time.clock(now)
	hour >= start_hour
	hour < end_hour
	not time.weekday(now) in weekend
}

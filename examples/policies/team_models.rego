# A team's executions, and those of its member agents, may use only the models the team
# allows. Attach it to the team.
package kubiya.execution.team_models

allowed_models := {"anthropic/claude-haiku-4-5", "openai/gpt-4.1-mini"}

deny contains msg if {
	input.action == "execute"
	model := input.execution.model_id
	is_string(model)
	not model in allowed_models
	msg := sprintf("model %s is not allowed for %s", [model, input.entity.name])
}

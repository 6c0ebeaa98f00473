/* Building the prompt of a request to a native agent. */
#include "services/llm-worker/prompt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"

static void add(json_t *messages, const char *role, const char *content)
{
    json_t *m = json_pack("{s:s, s:s}", "role", role, "content", content);
    if (m == NULL || json_array_append_new(messages, m) != 0)
        abort(); /* only memory can make this fail: util.h's policy */
}

json_t *llmw_prompt_messages(const struct llmw_prompt *p)
{
    json_t *messages = json_array();
    if (messages == NULL)
        abort();
    if (p->role_description != NULL && p->role_description[0] != '\0') {
        add(messages, "system", p->role_description);
    } else {
        char *text = NULL;
        if (asprintf(&text, "You are %s.", p->agent_name) < 0)
            abort();
        add(messages, "system", text);
        free(text);
    }
    for (size_t i = 0; i < p->history_count; i++)
        add(messages, p->history[i].from_agent ? "assistant" : "user", p->history[i].content);
    /* The notice Clawith puts before agent-to-agent messages, said plainly: the model must
     * know its text is the answer (not a draft for a tool to send), and to whom it goes. A
     * webhook's message goes back to nobody: saying so keeps the model from addressing a
     * reader who will never see it. (Its content comes already marked as untrusted external
     * text by the template that rendered it.) */
    char *text = NULL;
    int n = p->from_webhook
                ? asprintf(&text,
                           "[Message from %s (an incoming webhook, not an agent). Your text "
                           "reply is recorded as your response; it is not sent back to "
                           "anyone.]\n\n%s",
                           p->sender_name, p->content)
                : asprintf(&text,
                           "[Message from agent %s. Your text reply is delivered straight back "
                           "to %s; do not try to send it another way.]\n\n%s",
                           p->sender_name, p->sender_name, p->content);
    if (n < 0)
        abort();
    add(messages, "user", text);
    free(text);
    return messages;
}

/* A jobtap plugin for the tests (tests/test_live_over_mirror.py): a job
 * submitted with urgency 1 stays in the PRIORITY state (its priority is
 * "unavailable") until its urgency changes (`flux job urgency ID N`); every
 * other job gets the priority Flux's default plugin gives (the urgency; 0
 * when held, the maximum when expedited). Flux ships no plugin that keeps
 * a job in PRIORITY, and the live views must show that state. A job of
 * urgency 2 is rejected at validation, after its `submit` event: Flux then
 * posts `invalidate` for it. */

#include <stdint.h>

#include <flux/core.h>
#include <flux/jobtap.h>

/* job.state.priority and job.priority.get: the priority of one job. */
static int priority_cb (flux_plugin_t *p, const char *topic,
                        flux_plugin_arg_t *args, void *arg)
{
    int urgency = -1;
    int64_t priority;

    (void)topic;
    (void)arg;
    if (flux_plugin_arg_unpack (args, FLUX_PLUGIN_ARG_IN,
                                "{s:i}", "urgency", &urgency) < 0)
        return flux_jobtap_error (p, args, "hold-priority: no urgency");
    if (urgency == 1) {
        /* to be told of the job's urgency events (urgency_cb) */
        if (flux_jobtap_job_subscribe (p, FLUX_JOBTAP_CURRENT_JOB) < 0)
            return flux_jobtap_error (p, args, "hold-priority: subscribe failed");
        return flux_jobtap_priority_unavail (p, args);
    }
    priority = urgency == 0 ? 0 : urgency == 31 ? 4294967295 : urgency;
    return flux_plugin_arg_pack (args, FLUX_PLUGIN_ARG_OUT,
                                 "{s:I}", "priority", priority);
}

/* job.event.urgency: a job held here whose urgency changed gets its
 * priority now (Flux asks the plugin again only for jobs in SCHED). */
static int urgency_cb (flux_plugin_t *p, const char *topic,
                       flux_plugin_arg_t *args, void *arg)
{
    flux_jobid_t id;
    int state = 0;
    int urgency = -1;

    (void)topic;
    (void)arg;
    if (flux_plugin_arg_unpack (args, FLUX_PLUGIN_ARG_IN,
                                "{s:I s:i s:{s:{s:i}}}",
                                "id", &id,
                                "state", &state,
                                "entry", "context", "urgency", &urgency) < 0)
        return flux_jobtap_error (p, args, "hold-priority: bad urgency event");
    if (state != FLUX_JOB_STATE_PRIORITY || urgency == 1)
        return 0;
    return flux_jobtap_reprioritize_job (p, id,
                                         urgency == 0 ? 0
                                         : urgency == 31 ? 4294967295U
                                         : (unsigned int)urgency);
}

/* job.validate: a job of urgency 2 is rejected (Flux posts `invalidate`). */
static int validate_cb (flux_plugin_t *p, const char *topic,
                        flux_plugin_arg_t *args, void *arg)
{
    int urgency = -1;

    (void)topic;
    (void)arg;
    if (flux_plugin_arg_unpack (args, FLUX_PLUGIN_ARG_IN,
                                "{s:i}", "urgency", &urgency) < 0)
        return flux_jobtap_error (p, args, "hold-priority: no urgency");
    if (urgency == 2)
        return flux_jobtap_reject_job (p, args, "urgency 2 is rejected by the test plugin");
    return 0;
}

static const struct flux_plugin_handler tab[] = {
    { "job.validate", validate_cb, NULL },
    { "job.state.priority", priority_cb, NULL },
    { "job.priority.get", priority_cb, NULL },
    { "job.event.urgency", urgency_cb, NULL },
    { 0 },
};

/* Entry point: register the two callbacks. */
int flux_plugin_init (flux_plugin_t *p)
{
    return flux_plugin_register (p, "hold-priority", tab);
}

//! Job defaults from the API's settings fill only what a job file leaves out.

use crate::api::JobDefaults;

use super::{JobFile, parse, with_defaults};

/// The job as a fleet's coordinator plans it on the digits data.
fn planned(job: &JobFile) -> Result<tg_types::spec::JobSpec, tg_job::JobError> {
    job.job
        .plan(&tg_job::Facts {
            num_parameters: 4810,
            train_examples: 1437,
            client_sizes: None,
        })
        .map(|p| p.spec)
}

const FILE: &str = "[job]\ndataset = \"digits\"\nclients = 4\nlr = 0.2\n\n\
                    [privacy]\nmode = \"local-sgd\"\nnoise_multiplier = 1.0\n\
                    sampling_rate = 0.05\nsteps_per_round = 5\n";

#[test]
fn defaults_fill_absent_keys_and_never_override_the_file() {
    let defaults = JobDefaults {
        rounds: Some(9),
        lr: Some(0.01),
        target_epsilon: Some(3.5),
        sparsity: Some(0.5),
        ..JobDefaults::default()
    };
    let text = with_defaults(FILE, &defaults);
    let job = parse("test", text.as_bytes()).expect("valid with defaults");
    let spec = planned(&job).expect("plans");
    assert_eq!(spec.rounds, 9);
    assert!(
        (spec.train.learning_rate - 0.2).abs() < 1e-6,
        "the file's lr wins"
    );
    let privacy = spec.privacy.expect("privacy");
    assert!((privacy.target_epsilon.get() - 3.5).abs() < 1e-12);
    // No [secure_aggregation] table: sparsity is not invented.
    assert!(spec.secure_aggregation.is_none());
}

#[test]
fn without_defaults_a_file_missing_a_required_key_is_refused() {
    let text = with_defaults(FILE, &JobDefaults::default());
    let Err(err) = parse("test", text.as_bytes()) else {
        panic!("target_epsilon is required");
    };
    assert!(err.to_string().contains("target_epsilon"), "{err}");
}

#[test]
fn text_that_is_not_toml_is_passed_through_for_parse_to_report() {
    let junk = "not = [toml";
    assert_eq!(with_defaults(junk, &JobDefaults::default()), junk);
}

#[test]
fn attestation_must_pin_code_or_say_any() {
    let base = "[job]\ndataset = \"digits\"\nclients = 4\n\n[attestation]\nrequired = true\n";
    let Err(err) = parse("test", base.as_bytes()) else {
        panic!("a TEE requirement that pins no code must be refused");
    };
    assert!(err.to_string().contains("measurements"), "{err}");
    let any = format!("{base}[attestation.policy]\nmeasurements = \"any\"\n");
    let job = parse("test", any.as_bytes()).expect("\"any\" is explicit");
    assert!(job.attestation.expect("required").admits_any_code());
    // An RTMR or host_data alone does not pin the code (the host or a
    // malicious TDVF chooses them): refused without "any".
    let rtmr_only = format!(
        "{base}[attestation.policy]\npinned = {{ rtmr1 = [\"{}\"] }}\n",
        "ab".repeat(48)
    );
    assert!(parse("test", rtmr_only.as_bytes()).is_err());
    let measured = format!(
        "{base}[attestation.policy]\nmeasurements = [\"{}\"]\npinned = {{ rtmr1 = [\"{}\"] }}\n",
        "cd".repeat(48),
        "ab".repeat(48)
    );
    let job = parse("test", measured.as_bytes()).expect("MRTD plus an RTMR pins the code");
    assert!(job.attestation.expect("required").pins_code());
    // Not required: nothing to pin.
    let off = "[job]\ndataset = \"digits\"\nclients = 4\n\n[attestation]\nrequired = false\n";
    assert!(parse("test", off.as_bytes()).is_ok());
}

#[test]
fn secure_aggregation_with_two_clients_is_refused_at_parse() {
    let two = "[job]\ndataset = \"digits\"\nclients = 2\n\n[secure_aggregation]\nbits = 20\n";
    let Err(err) = parse("test", two.as_bytes()) else {
        panic!("two clients learn each other's update from the sum");
    };
    assert!(err.to_string().contains("at least 3 clients"), "{err}");
    let three = two.replace("clients = 2", "clients = 3");
    assert!(parse("test", three.as_bytes()).is_ok());
}

#[test]
fn combinations_the_demo_refuses_are_refused_at_parse_time_with_its_words() {
    for (file, words) in [
        (
            "[job]\nstrategy = \"scaffold\"\nclients = 4\n[secure_aggregation]\n",
            "SCAFFOLD needs each client's control variate",
        ),
        (
            "[job]\nclients = 2\n[secure_aggregation]\n",
            "at least 3 clients",
        ),
    ] {
        let Err(e) = parse("t", file.as_bytes()) else {
            panic!("accepted: {file}");
        };
        // E020 at the CLI: the invalid-value family.
        assert!(matches!(e, tg_job::JobError::Invalid(_)), "{file}: {e:?}");
        assert!(e.problem().why.contains(words), "{file}: {e}");
    }
}

#[test]
fn dp_job_files_resolve_as_the_demo_does_and_refuse_foreign_keys() {
    let head =
        "[job]\ndataset = \"digits\"\nclients = 6\nfraction = 0.5\nmin_clients = 1\n\n[privacy]\n";
    let ok = format!(
        "{head}mode = \"central\"\ntarget_epsilon = 8.0\nnoise_multiplier = 1.0\nclip = 0.5\n"
    );
    let job = parse("t", ok.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    let spec = planned(&job).unwrap_or_else(|e| panic!("{e}"));
    let Some(tg_types::privacy::DpMode::Central(c)) = spec.privacy.map(|p| p.mode) else {
        panic!("not central DP");
    };
    assert_eq!(c.population, 6);
    assert!((c.client_sampling_rate.get() - 0.5).abs() < 1e-12);
    assert!(spec.train.dp_sgd.is_none());
    // Distributed DP on a fleet: SecAgg+ implied, noise calibrated.
    let distributed = format!("{head}mode = \"distributed\"\ntarget_epsilon = 8.0\n");
    let job = parse("t", distributed.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    let spec = planned(&job).unwrap_or_else(|e| panic!("{e}"));
    assert!(spec.secure_aggregation.is_some());
    for (body, words) in [
        (
            "mode = \"central\"\ntarget_epsilon = 8.0\nnoise_multiplier = 1.0\nclip = 1.0\nsampling_rate = 0.1\n",
            "no meaning",
        ),
        (
            "mode = \"distributed\"\ntarget_epsilon = 8.0\nnoise_multiplier = 1.0\n",
            "calibrates",
        ),
        ("mode = \"central\"\nnoise_multiplier = 1.0\n", "budget"),
    ] {
        let Err(e) = parse("t", format!("{head}{body}").as_bytes()) else {
            panic!("accepted: {body}");
        };
        assert!(
            e.problem().why.contains(words) || e.problem().fix.contains(words),
            "{body}: {e}"
        );
    }
    // DP-SGD's rate cannot be derived without the agents' data.
    let sgd = format!("{head}mode = \"local-sgd\"\ntarget_epsilon = 8.0\nsteps_per_round = 5\n");
    let job = parse("t", sgd.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    let e = planned(&job).expect_err("no rate");
    assert_eq!(e.key(), Some("privacy.sampling_rate"));
}

# Report: one papermill job per notebook (tables and figures beside the paper's), then one HTML file.
import json

# notebooks/<name>.py (jupytext py:percent), in report order; found next to workflow/, not in the working dir
NOTEBOOKS = [
    "tables",
    "fig3_lambda_sweep",
    "fig4_data_size",
    "fig5_retrievals",
    "fig6_representation",
    "fig7_localisation",
]
NOTEBOOK_DIR = Path(workflow.basedir).parent / "notebooks"
REPORT = RESULTS / "report"


rule notebook:
    """Execute one notebook on the results (papermill), save its tables and figures, render it without code."""
    input:
        notebook=NOTEBOOK_DIR / "{notebook}.py",
        results=rules.tables.output.results,
        evaluations=eval_results(),
        localisation=localisation_inputs,
        subset=main_subset(),
    output:
        ipynb=REPORT / "notebooks" / "{notebook}.ipynb",
        html=report(
            REPORT / "notebooks" / "{notebook}.html",
            caption="../report/notebook_page.rst",
            category="Notebooks",
            labels=notebook_page_labels,
        ),
        out_dir=report(
            directory(REPORT / "{notebook}"),
            patterns=["{name}.{ext,png|csv}"],  # the figures and tables (ReportOutputs)
            caption="../report/notebook_output.rst",
            category="Figures and tables",
            subcategory="{notebook}",
            labels=notebook_item_labels,
        ),
    log:
        LOGS / "report" / "{notebook}.log",
    benchmark:
        LOGS / "report" / "{notebook}.benchmark.tsv"
    wildcard_constraints:
        notebook="|".join(NOTEBOOKS),
    localrule: True
    conda:
        "../../envs/report.yaml"
    params:
        results_dir=RESULTS / "eval",
        parameters=notebook_parameters,
        code=code_hash("report"),  # the notebook itself is an input
    shell:
        "(jupytext --to ipynb -o - {input.notebook} | papermill - {output.ipynb} -k python3 --no-progress-bar "
        "-p results_csv {input.results} -p results_dir {params.results_dir} -p out_dir {output.out_dir} "
        "-y {params.parameters:q} && jupyter nbconvert --to html --no-input {output.ipynb}) > {log} 2>&1"


rule report:
    """One self-contained report.html: every table and figure beside the paper's, config, code and data versions."""
    input:
        notebooks=expand(rules.notebook.output.out_dir, notebook=NOTEBOOKS),
        pages=expand(rules.notebook.output.html, notebook=NOTEBOOKS),
    output:
        report(RESULTS / "report.html", caption="../report/report_html.rst", category="Report"),
    log:
        LOGS / "report" / "report.log",
    localrule: True
    conda:
        "../../envs/report.yaml"
    params:
        results_dir=RESULTS / "eval",
        data_dir=DATA,
        config=json.dumps(config, default=str),
        hash_memo=RESULTS / "embeddings" / "file-hashes.json",
        code=code_hash("report"),
    shell:
        "rankclip report html --notebooks {input.notebooks} --out {output} --results-dir {params.results_dir} "
        "--config-json {params.config:q} --data-dir {params.data_dir} --hash-memo {params.hash_memo} > {log} 2>&1"

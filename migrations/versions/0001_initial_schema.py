"""Initial schema: campaigns, clips, candidates, experiments, artifacts,
measurements, anchor results, scores.

Revision ID: 0001
Revises:
Create Date: 2026-11-22 04:12:46.093434+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('anchor_results',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('clip_sha256', sa.String(length=64), nullable=False),
    sa.Column('codec', sa.String(length=32), nullable=False),
    sa.Column('crf', sa.Integer(), nullable=False),
    sa.Column('settings', sa.JSON(), nullable=False),
    sa.Column('settings_hash', sa.String(length=64), nullable=False),
    sa.Column('n_bytes', sa.BigInteger(), nullable=False),
    sa.Column('kbps', sa.Float(), nullable=False),
    sa.Column('bpp', sa.Float(), nullable=False),
    sa.Column('psnr_rgb', sa.Float(), nullable=False),
    sa.Column('psnr_y', sa.Float(), nullable=False),
    sa.Column('ssim_y', sa.Float(), nullable=False),
    sa.Column('ms_ssim', sa.Float(), nullable=True),
    sa.Column('encode_seconds', sa.Float(), nullable=True),
    sa.Column('decode_seconds', sa.Float(), nullable=True),
    sa.Column('anchor_version', sa.String(length=64), nullable=False),
    sa.Column('metrics_version', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint('(ms_ssim IS NULL OR (ms_ssim >= -1 AND ms_ssim <= 1))', name=op.f('ck_anchor_results_ms_ssim_range')),
    sa.CheckConstraint('bpp >= 0 AND bpp <= 1000000.0 AND bpp > 0', name=op.f('ck_anchor_results_bpp_finite')),
    sa.CheckConstraint('kbps >= 0 AND kbps <= 1000000000000.0 AND kbps > 0', name=op.f('ck_anchor_results_kbps_finite')),
    sa.CheckConstraint('length(clip_sha256) = 64', name=op.f('ck_anchor_results_clip_sha256_is_sha256')),
    sa.CheckConstraint('length(settings_hash) = 64', name=op.f('ck_anchor_results_settings_hash_is_sha256')),
    sa.CheckConstraint('n_bytes > 0', name=op.f('ck_anchor_results_n_bytes_positive')),
    sa.CheckConstraint('psnr_rgb >= 0 AND psnr_rgb <= 100.0', name=op.f('ck_anchor_results_psnr_rgb_range')),
    sa.CheckConstraint('psnr_y >= 0 AND psnr_y <= 100.0', name=op.f('ck_anchor_results_psnr_y_range')),
    sa.CheckConstraint('ssim_y >= -1 AND ssim_y <= 1', name=op.f('ck_anchor_results_ssim_y_range')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_anchor_results')),
    sa.UniqueConstraint('clip_sha256', 'codec', 'crf', 'settings_hash', name=op.f('uq_anchor_results_clip_sha256_codec_crf_settings_hash'))
    )
    op.create_table('campaigns',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_campaigns')),
    sa.UniqueConstraint('name', name=op.f('uq_campaigns_name'))
    )
    op.create_table('clips',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('source', sa.Text(), nullable=False),
    sa.Column('width', sa.Integer(), nullable=False),
    sa.Column('height', sa.Integer(), nullable=False),
    sa.Column('n_frames', sa.Integer(), nullable=False),
    sa.Column('fps', sa.Float(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint('fps > 0', name=op.f('ck_clips_positive_fps')),
    sa.CheckConstraint('length(sha256) = 64', name=op.f('ck_clips_sha256_is_sha256')),
    sa.CheckConstraint('width > 0 AND height > 0 AND n_frames > 0', name=op.f('ck_clips_positive_size')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_clips')),
    sa.UniqueConstraint('sha256', name=op.f('uq_clips_sha256'))
    )
    op.create_table('candidates',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('campaign_id', sa.Integer(), nullable=True),
    sa.Column('code', sa.Text(), nullable=True),
    sa.Column('ast_hash', sa.String(length=64), nullable=True),
    sa.Column('generator', sa.String(length=64), nullable=False),
    sa.Column('model', sa.String(length=200), nullable=True),
    sa.Column('prompt', sa.Text(), nullable=True),
    sa.Column('raw_reply', sa.Text(), nullable=True),
    sa.Column('prompt_tokens', sa.Integer(), nullable=True),
    sa.Column('completion_tokens', sa.Integer(), nullable=True),
    sa.Column('sanitizer_verdict', sa.String(length=16), nullable=True),
    sa.Column('sanitizer_reason', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("sanitizer_verdict IN ('accepted', 'rejected')", name=op.f('ck_candidates_sanitizer_verdict')),
    sa.CheckConstraint("sanitizer_verdict IS NULL OR sanitizer_verdict = 'accepted' OR sanitizer_reason IS NOT NULL", name=op.f('ck_candidates_rejection_has_reason')),
    sa.CheckConstraint("sanitizer_verdict IS NULL OR sanitizer_verdict = 'rejected' OR (code IS NOT NULL AND ast_hash IS NOT NULL)", name=op.f('ck_candidates_accepted_has_code')),
    sa.CheckConstraint('(prompt_tokens IS NULL OR (prompt_tokens >= 0)) AND (completion_tokens IS NULL OR (completion_tokens >= 0))', name=op.f('ck_candidates_token_counts')),
    sa.CheckConstraint('length(ast_hash) = 64', name=op.f('ck_candidates_ast_hash_is_sha256')),
    sa.ForeignKeyConstraint(['campaign_id'], ['campaigns.id'], name=op.f('fk_candidates_campaign_id_campaigns')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_candidates'))
    )
    op.create_index(op.f('ix_candidates_ast_hash'), 'candidates', ['ast_hash'])
    op.create_index(op.f('ix_candidates_campaign_id'), 'candidates', ['campaign_id'])
    op.create_table('candidate_parents',
    sa.Column('candidate_id', sa.Integer(), nullable=False),
    sa.Column('parent_id', sa.Integer(), nullable=False),
    sa.CheckConstraint('candidate_id <> parent_id', name=op.f('ck_candidate_parents_not_own_parent')),
    sa.ForeignKeyConstraint(['candidate_id'], ['candidates.id'], name=op.f('fk_candidate_parents_candidate_id_candidates'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['parent_id'], ['candidates.id'], name=op.f('fk_candidate_parents_parent_id_candidates'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('candidate_id', 'parent_id', name=op.f('pk_candidate_parents'))
    )
    op.create_index(op.f('ix_candidate_parents_parent_id'), 'candidate_parents', ['parent_id'])
    op.create_table('experiments',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('campaign_id', sa.Integer(), nullable=True),
    sa.Column('candidate_id', sa.Integer(), nullable=True),
    sa.Column('clip_id', sa.Integer(), nullable=False),
    sa.Column('config', sa.JSON(), nullable=False),
    sa.Column('config_hash', sa.String(length=64), nullable=False),
    sa.Column('rate_points', sa.JSON(), nullable=False),
    sa.Column('anchors', sa.JSON(), nullable=False),
    sa.Column('status', sa.String(length=32), nullable=False),
    sa.Column('failure_stage', sa.String(length=32), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('duplicate_of_id', sa.Integer(), nullable=True),
    sa.Column('reused_from_id', sa.Integer(), nullable=True),
    sa.Column('worker_host', sa.String(length=255), nullable=True),
    sa.Column('device', sa.String(length=64), nullable=True),
    sa.Column('isolation', sa.String(length=200), nullable=True),
    sa.Column('lease_expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('queued_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('generate_started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('sanitize_started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('encode_started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('score_started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("(status = 'duplicate_output') = (duplicate_of_id IS NOT NULL)", name=op.f('ck_experiments_duplicate_has_original')),
    sa.CheckConstraint("reused_from_id IS NULL OR status = 'succeeded'", name=op.f('ck_experiments_reuse_only_succeeded')),
    sa.CheckConstraint("status IN ('cancelled', 'duplicate_output', 'encoding', 'failed', 'generating', 'queued', 'rejected', 'sanitizing', 'scoring', 'succeeded', 'timed_out')", name=op.f('ck_experiments_status')),
    sa.CheckConstraint("status NOT IN ('failed', 'rejected', 'timed_out', 'duplicate_output') OR error IS NOT NULL", name=op.f('ck_experiments_failure_has_error')),
    sa.CheckConstraint('attempts >= 0', name=op.f('ck_experiments_attempts_non_negative')),
    sa.CheckConstraint('duplicate_of_id IS NULL OR duplicate_of_id <> id', name=op.f('ck_experiments_not_duplicate_of_itself')),
    sa.CheckConstraint('length(config_hash) = 64', name=op.f('ck_experiments_config_hash_is_sha256')),
    sa.ForeignKeyConstraint(['campaign_id'], ['campaigns.id'], name=op.f('fk_experiments_campaign_id_campaigns')),
    sa.ForeignKeyConstraint(['candidate_id'], ['candidates.id'], name=op.f('fk_experiments_candidate_id_candidates')),
    sa.ForeignKeyConstraint(['clip_id'], ['clips.id'], name=op.f('fk_experiments_clip_id_clips')),
    sa.ForeignKeyConstraint(['duplicate_of_id'], ['experiments.id'], name=op.f('fk_experiments_duplicate_of_id_experiments')),
    sa.ForeignKeyConstraint(['reused_from_id'], ['experiments.id'], name=op.f('fk_experiments_reused_from_id_experiments')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_experiments'))
    )
    op.create_index(op.f('ix_experiments_campaign_id'), 'experiments', ['campaign_id'])
    op.create_index(op.f('ix_experiments_candidate_id'), 'experiments', ['candidate_id'])
    op.create_index('ix_experiments_clip_id_config_hash', 'experiments', ['clip_id', 'config_hash'])
    op.create_index(op.f('ix_experiments_duplicate_of_id'), 'experiments', ['duplicate_of_id'])
    op.create_index(op.f('ix_experiments_reused_from_id'), 'experiments', ['reused_from_id'])
    op.create_index('ix_experiments_status_finished_at', 'experiments', ['status', 'finished_at'])
    op.create_index('ix_experiments_status_lease_expires_at', 'experiments', ['status', 'lease_expires_at'])
    op.create_table('artifacts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('experiment_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('rate_index', sa.Integer(), nullable=False),
    sa.Column('path', sa.Text(), nullable=False),
    sa.Column('n_bytes', sa.BigInteger(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("kind IN ('bitstream')", name=op.f('ck_artifacts_kind')),
    sa.CheckConstraint('length(sha256) = 64', name=op.f('ck_artifacts_sha256_is_sha256')),
    sa.CheckConstraint('n_bytes > 0', name=op.f('ck_artifacts_n_bytes_positive')),
    sa.CheckConstraint('rate_index >= 0', name=op.f('ck_artifacts_rate_index_non_negative')),
    sa.ForeignKeyConstraint(['experiment_id'], ['experiments.id'], name=op.f('fk_artifacts_experiment_id_experiments'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_artifacts')),
    sa.UniqueConstraint('experiment_id', 'kind', 'rate_index', name=op.f('uq_artifacts_experiment_id_kind_rate_index')),
    sa.UniqueConstraint('path', name=op.f('uq_artifacts_path')),
    sa.UniqueConstraint('sha256', name=op.f('uq_artifacts_sha256'))
    )
    op.create_table('scores',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('experiment_id', sa.Integer(), nullable=False),
    sa.Column('anchor_codec', sa.String(length=32), nullable=False),
    sa.Column('metric', sa.String(length=32), nullable=False),
    sa.Column('bd_rate', sa.Float(), nullable=True),
    sa.Column('bd_psnr', sa.Float(), nullable=True),
    sa.Column('overlap', sa.Float(), nullable=True),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('anchor_version', sa.String(length=64), nullable=False),
    sa.Column('metrics_version', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint('(bd_psnr IS NULL OR (bd_psnr >= -1000 AND bd_psnr <= 1000))', name=op.f('ck_scores_bd_psnr_finite')),
    sa.CheckConstraint('(bd_rate IS NULL OR (bd_rate > -100 AND bd_rate < 1e9))', name=op.f('ck_scores_bd_rate_finite')),
    sa.CheckConstraint('(overlap IS NULL OR (overlap >= 0 AND overlap <= 1))', name=op.f('ck_scores_overlap_range')),
    sa.CheckConstraint('bd_rate IS NOT NULL OR reason IS NOT NULL', name=op.f('ck_scores_missing_bd_rate_has_reason')),
    sa.ForeignKeyConstraint(['experiment_id'], ['experiments.id'], name=op.f('fk_scores_experiment_id_experiments'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_scores')),
    sa.UniqueConstraint('experiment_id', 'anchor_codec', 'metric', name=op.f('uq_scores_experiment_id_anchor_codec_metric'))
    )
    op.create_index('ix_scores_leaderboard', 'scores', ['anchor_codec', 'metric', 'bd_rate', 'experiment_id'])
    op.create_table('measurements',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('artifact_id', sa.Integer(), nullable=False),
    sa.Column('rate_index', sa.Integer(), nullable=False),
    sa.Column('quality', sa.Float(), nullable=False),
    sa.Column('n_frames', sa.Integer(), nullable=False),
    sa.Column('n_bytes', sa.BigInteger(), nullable=False),
    sa.Column('bits', sa.BigInteger(), nullable=False),
    sa.Column('kbps', sa.Float(), nullable=False),
    sa.Column('bpp', sa.Float(), nullable=False),
    sa.Column('psnr_rgb', sa.Float(), nullable=False),
    sa.Column('psnr_y', sa.Float(), nullable=False),
    sa.Column('psnr_rgb_pooled', sa.Float(), nullable=False),
    sa.Column('psnr_y_pooled', sa.Float(), nullable=False),
    sa.Column('psnr_capped_frames', sa.Integer(), nullable=False),
    sa.Column('ssim_y', sa.Float(), nullable=False),
    sa.Column('ms_ssim', sa.Float(), nullable=True),
    sa.Column('ms_ssim_scales', sa.Integer(), nullable=True),
    sa.Column('encode_seconds', sa.Float(), nullable=False),
    sa.Column('decode_seconds', sa.Float(), nullable=False),
    sa.Column('encode_fps', sa.Float(), nullable=True),
    sa.Column('decode_fps', sa.Float(), nullable=True),
    sa.Column('peak_rss_bytes', sa.BigInteger(), nullable=True),
    sa.Column('evaluator_version', sa.String(length=64), nullable=False),
    sa.Column('metrics_version', sa.String(length=64), nullable=False),
    sa.Column('clip_sha256', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint('(encode_fps IS NULL OR (encode_fps >= 0 AND encode_fps <= 1000000000000.0)) AND (decode_fps IS NULL OR (decode_fps >= 0 AND decode_fps <= 1000000000000.0))', name=op.f('ck_measurements_fps_finite')),
    sa.CheckConstraint('(ms_ssim IS NULL OR (ms_ssim >= -1 AND ms_ssim <= 1))', name=op.f('ck_measurements_ms_ssim_range')),
    sa.CheckConstraint('(ms_ssim_scales IS NULL OR (ms_ssim_scales BETWEEN 1 AND 5))', name=op.f('ck_measurements_ms_ssim_scales_range')),
    sa.CheckConstraint('(peak_rss_bytes IS NULL OR (peak_rss_bytes > 0))', name=op.f('ck_measurements_peak_rss_positive')),
    sa.CheckConstraint('bpp >= 0 AND bpp <= 1000000.0 AND bpp > 0', name=op.f('ck_measurements_bpp_finite')),
    sa.CheckConstraint('encode_seconds >= 0 AND encode_seconds <= 1000000000.0 AND decode_seconds >= 0 AND decode_seconds <= 1000000000.0', name=op.f('ck_measurements_seconds_finite')),
    sa.CheckConstraint('kbps >= 0 AND kbps <= 1000000000000.0 AND kbps > 0', name=op.f('ck_measurements_kbps_finite')),
    sa.CheckConstraint('length(clip_sha256) = 64', name=op.f('ck_measurements_clip_sha256_is_sha256')),
    sa.CheckConstraint('n_bytes > 0 AND bits = 8 * n_bytes', name=op.f('ck_measurements_bits_are_bytes')),
    sa.CheckConstraint('psnr_capped_frames >= 0', name=op.f('ck_measurements_psnr_capped_frames_non_negative')),
    sa.CheckConstraint('psnr_rgb >= 0 AND psnr_rgb <= 100.0', name=op.f('ck_measurements_psnr_rgb_range')),
    sa.CheckConstraint('psnr_rgb_pooled >= 0 AND psnr_rgb_pooled <= 100.0', name=op.f('ck_measurements_psnr_rgb_pooled_range')),
    sa.CheckConstraint('psnr_y >= 0 AND psnr_y <= 100.0', name=op.f('ck_measurements_psnr_y_range')),
    sa.CheckConstraint('psnr_y_pooled >= 0 AND psnr_y_pooled <= 100.0', name=op.f('ck_measurements_psnr_y_pooled_range')),
    sa.CheckConstraint('quality >= 0 AND quality <= 1', name=op.f('ck_measurements_quality_range')),
    sa.CheckConstraint('ssim_y >= -1 AND ssim_y <= 1', name=op.f('ck_measurements_ssim_y_range')),
    sa.ForeignKeyConstraint(['artifact_id'], ['artifacts.id'], name=op.f('fk_measurements_artifact_id_artifacts'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_measurements')),
    sa.UniqueConstraint('artifact_id', name=op.f('uq_measurements_artifact_id'))
    )


def downgrade() -> None:
    op.drop_table('measurements')
    op.drop_index('ix_scores_leaderboard', table_name='scores')
    op.drop_table('scores')
    op.drop_table('artifacts')
    op.drop_index('ix_experiments_status_lease_expires_at', table_name='experiments')
    op.drop_index('ix_experiments_status_finished_at', table_name='experiments')
    op.drop_index(op.f('ix_experiments_reused_from_id'), table_name='experiments')
    op.drop_index(op.f('ix_experiments_duplicate_of_id'), table_name='experiments')
    op.drop_index('ix_experiments_clip_id_config_hash', table_name='experiments')
    op.drop_index(op.f('ix_experiments_candidate_id'), table_name='experiments')
    op.drop_index(op.f('ix_experiments_campaign_id'), table_name='experiments')
    op.drop_table('experiments')
    op.drop_index(op.f('ix_candidate_parents_parent_id'), table_name='candidate_parents')
    op.drop_table('candidate_parents')
    op.drop_index(op.f('ix_candidates_campaign_id'), table_name='candidates')
    op.drop_index(op.f('ix_candidates_ast_hash'), table_name='candidates')
    op.drop_table('candidates')
    op.drop_table('clips')
    op.drop_table('campaigns')
    op.drop_table('anchor_results')
